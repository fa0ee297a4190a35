//! Function calls (`POST /fn/NAME`) answered by the coordinator's native
//! slots, beside the floor: `fn_floor`, a minimal hyper server running the
//! same sandboxed module in-process with the same engine and a kept instance
//! per thread. Both are driven by `callload` (tests/e2e/src/bin) on the same
//! machine: first closed loop (the most each answers, and the CPU each spends
//! per call), then open loop at half of that rate (latency at half load).

use super::{cpu_seconds, Table};
use crate::build;
use anyhow::{bail, Context};
use idlecore_e2e::Paths;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A function workload: its module in target/sandboxed, its stdin, its args.
struct Workload {
    name: &'static str,
    what: &'static str,
    module: &'static str,
    args: &'static [&'static str],
}

const WORKLOADS: [Workload; 2] = [
    Workload { name: "empty", what: "empty function", module: "empty", args: &[] },
    Workload { name: "thumb", what: "thumbnail (64x48 PNG to 32x24)", module: "thumbnail", args: &["--width", "32"] },
];

/// What `callload` measured.
struct Load {
    rate: f64,
    p50: f64,
    p99: f64,
    calls: u64,
    ok: u64,
}

fn callload(paths: &Paths, url: &str, body: &Path, connections: u32, seconds: f64, rate: Option<f64>) -> anyhow::Result<Load> {
    let mut cmd = Command::new(paths.native_tasks.join("callload"));
    cmd.arg(url).args(["--connections", &connections.to_string(), "--seconds", &seconds.to_string(), "--body"]).arg(body);
    if let Some(r) = rate {
        cmd.args(["--rate", &format!("{r:.0}")]);
    }
    let out = cmd.output().context("running callload (built by `cargo xtask build`)")?;
    if !out.status.success() {
        bail!("callload failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let load = Load {
        rate: f("rate"),
        p50: f("p50_ms"),
        p99: f("p99_ms"),
        calls: v["calls"].as_u64().unwrap_or(0),
        ok: v["ok"].as_u64().unwrap_or(0),
    };
    if load.ok != load.calls || load.calls == 0 {
        bail!("{url}: {} of {} calls answered 2xx: {}", load.ok, load.calls, v["statuses"]);
    }
    Ok(load)
}

/// The floor server on `module`, and its address.
fn floor(paths: &Paths, module: &Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(paths.native_tasks.join("fn_floor"))
        .arg(module)
        .arg("2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting fn_floor (built by `cargo xtask build`)")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line.trim().strip_prefix("listening on ").with_context(|| format!("fn_floor said {line:?}"))?.to_string();
    Ok((child, format!("http://{addr}/")))
}

/// One server under test: its process and the URL of the call.
struct Server {
    pid: u32,
    url: String,
}

/// What `measure` found for one server: closed-loop load (the median
/// round's), CPU seconds per call (median), half-load latency.
struct Measured {
    max: Load,
    cpu: f64,
    half: Load,
}

/// Closed-loop rounds taken in turn on each server (the machine's noise
/// moves them together), then open loop at half of each one's median rate.
fn measure(paths: &Paths, servers: &[Server], body: &Path, seconds: f64, rounds: usize) -> anyhow::Result<Vec<Measured>> {
    // A warm-up (instances made, connections set up), then the measured runs.
    for s in servers {
        callload(paths, &s.url, body, 4, seconds / 5.0, None)?;
    }
    let mut samples: Vec<Vec<(Load, f64)>> = servers.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (s, samples) in servers.iter().zip(&mut samples) {
            let cpu = cpu_seconds(s.pid)?;
            let max = callload(paths, &s.url, body, 32, seconds, None)?;
            let per_call = (cpu_seconds(s.pid)? - cpu) / max.calls.max(1) as f64;
            samples.push((max, per_call));
        }
    }
    let mut out = Vec::new();
    for (s, mut samples) in servers.iter().zip(samples) {
        let mut cpus: Vec<f64> = samples.iter().map(|(_, c)| *c).collect();
        cpus.sort_by(f64::total_cmp);
        samples.sort_by(|a, b| a.0.rate.total_cmp(&b.0.rate));
        let max = samples.swap_remove(samples.len() / 2).0;
        let half = callload(paths, &s.url, body, 32, seconds, Some(max.rate / 2.0))?;
        out.push(Measured { max, cpu: cpus[cpus.len() / 2], half });
    }
    Ok(out)
}

/// A PNG picture for the thumbnail function.
fn picture_png(w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let pixels: Vec<u8> = (0..h).flat_map(|y| (0..w).flat_map(move |x| [(x * 255 / w) as u8, (y * 255 / h) as u8, 90])).collect();
    enc.write_header()?.write_image_data(&pixels)?;
    Ok(out)
}

pub fn section(paths: &Paths, smoke: bool, targets: &mut Table) -> anyhow::Result<String> {
    let (seconds, rounds) = if smoke { (0.5, 1) } else { (5.0, 3) };
    let dir = tempfile::tempdir()?;
    let mut md = String::from(
        "## Function calls\n\n\
         `POST /fn/NAME` on loopback, answered by the coordinator's native slots (`idlecore serve`, default flags:\n\
         one slot on two cores), beside the floor: `fn_floor`, a minimal hyper server running the same sandboxed\n\
         module with the same engine in-process, an instance kept per thread, no queue. `callload` drives both:\n\
         32 connections closed loop (the most each answers; CPU per call of the server process), three rounds\n\
         taken in turn on the two servers, the median of each; then open loop at half the median rate (latency\n\
         from when each call was due). Calls through browsers and native workers are not built yet.\n\n\
         | function | server | calls/s (max) | CPU per call | p50 at half load | p99 at half load |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for w in &WORKLOADS {
        let body = dir.path().join(format!("{}.body", w.name));
        std::fs::write(&body, if w.name == "thumb" { picture_png(64, 48)? } else { vec![] })?;
        let module = build::sandboxed_dir().join(format!("{}.sandboxed.wasm", w.module));
        let (mut floor_server, floor_url) = floor(paths, &module)?;
        let floor_url = if w.args.is_empty() { floor_url } else { format!("{floor_url}?{}", query(w.args)) };
        let measured =
            measure_with_coordinator(paths, dir.path(), w, &body, Server { pid: floor_server.id(), url: floor_url }, seconds, rounds);
        let _ = floor_server.kill();
        let _ = floor_server.wait();
        let (measured, warm) = measured?;
        let [Measured { max: floor_max, cpu: floor_cpu, half: floor_half }, Measured { max, cpu, half }] =
            <[Measured; 2]>::try_from(measured).map_err(|_| anyhow::anyhow!("two servers measured"))?;
        md.push_str(&format!(
            "| {} | floor | {:.0} | {:.1} µs | {:.2} ms | {:.2} ms |\n\
             | | native slots | {:.0} ({:.2}x) | {:.1} µs ({:.2}x) | {:.2} ms | {:.2} ms |\n",
            w.what,
            floor_max.rate,
            floor_cpu * 1e6,
            floor_half.p50,
            floor_half.p99,
            max.rate,
            max.rate / floor_max.rate,
            cpu * 1e6,
            cpu / floor_cpu,
            half.p50,
            half.p99,
        ));
        md.push_str(&format!("|  | warm share of the native slots' runs: {:.2}% | | | | |\n", warm * 100.0));
        if w.name == "empty" {
            targets.row(
                "native slots ≥ 20,000 calls/s of the empty function on 2 cores",
                &format!("{:.0} calls/s", max.rate),
                max.rate >= 20_000.0,
            );
            targets.row(
                "native slots' cost per call ≤ 1.3x the floor's (empty function)",
                &format!("{:.2}x ({:.1} µs vs {:.1} µs)", cpu / floor_cpu, cpu * 1e6, floor_cpu * 1e6),
                cpu / floor_cpu <= 1.3,
            );
        }
    }
    Ok(md)
}

fn query(args: &[&str]) -> String {
    args.iter().map(|a| format!("arg={a}")).collect::<Vec<_>>().join("&")
}

/// The floor and a coordinator with the workload deployed, measured in
/// turn; also the warm share of the coordinator's runs.
fn measure_with_coordinator(
    paths: &Paths,
    dir: &Path,
    w: &Workload,
    body: &Path,
    floor: Server,
    seconds: f64,
    rounds: usize,
) -> anyhow::Result<(Vec<Measured>, f64)> {
    let c = super::plain_coordinator(paths, &dir.join(format!("data-{}", w.name)))?;
    let api = c.api();
    let hash = api.upload(&std::fs::read(build::sandboxed_dir().join(format!("{}.wasm", w.module)))?)?;
    let deploy = json!({ "module": hash, "public": true });
    let r = api.request("PUT", &format!("/api/functions/{}", w.name), Some("Bearer bench"), deploy.to_string().into_bytes())?;
    if r.status != 201 {
        bail!("deploying {}: {} {}", w.name, r.status, r.body);
    }
    let mut url = format!("{}/fn/{}", c.base_url(), w.name);
    if !w.args.is_empty() {
        url = format!("{url}?{}", query(w.args));
    }
    let measured = measure(paths, &[floor, Server { pid: c.pid(), url }], body, seconds, rounds)?;
    let stats = api.request("GET", &format!("/api/functions/{}", w.name), Some("Bearer bench"), vec![])?.body;
    Ok((measured, stats["stats"]["warm_share"].as_f64().unwrap_or(0.0)))
}
