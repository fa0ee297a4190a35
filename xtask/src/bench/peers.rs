//! Peer transfers: the coordinator's egress, and a joining visitor's wait for
//! a large task input, with peers on and off (the baseline) in one run. Runs
//! `tests/embed/webrtc/egress.bench.mjs` in headless Chromium inside a
//! network namespace (Chromium gathers no loopback candidates), which needs root.

use crate::embed::Netns;
use crate::root;
use anyhow::Context;
use std::process::Command;

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

pub fn section(smoke: bool) -> anyhow::Result<String> {
    let heading = "## Peer transfers\n\n";
    if !is_root() {
        eprintln!("xtask: bench: peer transfers skipped (a network namespace needs root)");
        return Ok(format!("{heading}Not measured in this run: the network namespace it needs takes root.\n"));
    }
    let (visitors, input_mib) = if smoke { (2, 1) } else { (4, 16) };
    eprintln!("xtask: bench: peer transfers, {visitors} visitors, {input_mib} MiB input");
    crate::embed::prepare()?;
    let ns = Netns::create()?;
    let mut node = Command::new("node");
    node.arg("tests/embed/webrtc/egress.bench.mjs")
        .args(["--visitors", &visitors.to_string(), "--mib", &input_mib.to_string()])
        .current_dir(root());
    let out = ns.exec(node).output().context("running egress.bench.mjs")?;
    anyhow::ensure!(
        out.status.success(),
        "egress.bench.mjs failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).context("egress.bench.mjs printed no figures")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let f = |path: &[&str]| -> anyhow::Result<f64> {
        path.iter().try_fold(&v, |v, k| v.get(k)).and_then(|v| v.as_f64()).with_context(|| format!("no {}", path.join(".")))
    };
    let waits = |mode: &str| -> anyhow::Result<(f64, f64)> {
        let ms: Vec<f64> = v[mode]["first_task_ms"].as_array().context("no waits")?.iter().filter_map(|x| x.as_f64()).collect();
        anyhow::ensure!(!ms.is_empty(), "no waits");
        let later = if ms.len() > 1 { ms[1..].iter().sum::<f64>() / (ms.len() - 1) as f64 } else { f64::NAN };
        Ok((ms[0], later))
    };
    let (input, egress_on, egress_off, saved) =
        (f(&["input_bytes"])?, f(&["on", "egress"])?, f(&["off", "egress"])?, f(&["on", "peer_bytes"])?);
    let ((first_on, later_on), (first_off, later_off)) = (waits("on")?, waits("off")?);
    let rates: Vec<f64> = v["on"]["peer_mib_per_s"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default();
    let rate = if rates.is_empty() {
        "not measured (input too small to time)".to_string()
    } else {
        format!("about {:.1} MiB/s (mean of {})", rates.iter().sum::<f64>() / rates.len() as f64, rates.len())
    };
    Ok(format!(
        "{heading}{visitors} visitors (browser contexts of one headless Chromium, inside a network namespace) join one\n\
         after another; each runs tasks that all read the same {} input (a blob, fetched once per visitor),\n\
         so each needs the module and the input once. Egress: bytes the coordinator served from `/modules` and\n\
         `/blobs` (`download_bytes` in `/api/stats`). Wait: from a job being created after the visitor joined to\n\
         its first task done (the module, the input, the task). Baseline: the same with `data-peers=\"false\"`.\n\n\
         | peers | coordinator egress | served by peers instead | wait, first visitor | wait, later visitors (mean) |\n\
         | --- | --- | --- | --- | --- |\n\
         | off (baseline) | {} | — | {first_off:.0} ms | {later_off:.0} ms |\n\
         | on | {} ({:.0}% of the baseline) | {} | {first_on:.0} ms | {later_on:.0} ms |\n\n\
         A later visitor's wait with peers holds two peer connections one after the other (the module, then the\n\
         input: one connection per peer at a time, each with its own ICE, DTLS and SCTP set-up) and the transfers.\n\
         The input's transfer alone, from what the holders report sending (every 250 ms, so roughly): {rate}.\n",
        mib(input),
        mib(egress_off),
        mib(egress_on),
        egress_on / egress_off * 100.0,
        mib(saved),
    ))
}
