//! `cargo xtask bench`: measures, side by side in one run, and writes
//! `docs/benchmarks.md`. Nothing here is a test: no figure fails anything.
//! `--smoke` runs every benchmark at a tiny size and writes nothing (part of
//! `cargo xtask test`, so none of them rots).
//!
//! - `exec`: execution in the browser sandbox vs bare, wasmtime and native.
//! - `native`: execution in the native worker vs plain wasmtime and native.
//! - `dispatch`: the coordinator under the native `swarm` load generator:
//!   dispatch rate and latency, idle connections, growth with job size.
//! - `browsers`: end to end with headless Chromium workers, and start-up.
//! - `peers`: peer transfers, the coordinator's egress with peers on and off.
//! - `functions`: function calls through the coordinator's native slots vs a
//!   minimal server running the same module.
//! - the sabotage table (`sabotage.rs`).

mod browsers;
mod dispatch;
mod exec;
mod functions;
mod native;
mod peers;

use crate::{build, flag_value, root, tools};
use anyhow::Context;
use std::process::Command;

/// The targets table: each target, what was measured, met or missed.
#[derive(Default)]
pub struct Table {
    rows: Vec<(String, String, bool)>,
}

impl Table {
    pub fn row(&mut self, target: &str, measured: &str, met: bool) {
        self.rows.push((target.into(), measured.into(), met));
    }

    fn markdown(&self) -> String {
        let mut md = String::from("## Targets\n\n| target | measured | |\n| --- | --- | --- |\n");
        for (target, measured, met) in &self.rows {
            md.push_str(&format!("| {target} | {measured} | {} |\n", if *met { "met" } else { "MISSED" }));
        }
        md
    }
}

pub use idlecore_e2e::cpu_seconds;

/// A coordinator for a benchmark that needs nothing special of it: the
/// bench token, no site, the default flags, its data in `data`.
fn plain_coordinator(paths: &idlecore_e2e::Paths, data: &std::path::Path) -> anyhow::Result<idlecore_e2e::Coordinator> {
    idlecore_e2e::Coordinator::start(&idlecore_e2e::CoordinatorConfig {
        bin: &paths.bin,
        data,
        token: Some("bench"),
        addr: None,
        site: None,
        heartbeat_ms: 5000,
        extra: &[],
    })
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} for {pid}"))?;
    Ok(line.split_whitespace().nth(1).context("malformed status line")?.parse()?)
}

/// Resident memory of a process now, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory a process has had, in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let chromium = Command::new(idlecore_e2e::chromium_path())
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {memory}; Linux {}; {chromium}", kernel.trim())
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let iters: u32 = flag_value(args, "--iters")?.map(str::parse).transpose().context("--iters")?.unwrap_or(20);
    tools::ensure()?;
    let only = flag_value(args, "--only")?.map(|o| o.split(',').map(String::from).collect::<Vec<_>>());
    if let Some(unknown) = only.iter().flatten().find(|s| !SECTIONS.contains(&s.as_str())) {
        anyhow::bail!("--only: no benchmark {unknown:?}; there are {}", SECTIONS.join(", "));
    }
    let paths = build::all()?;
    measure(&paths, args.iter().any(|a| a == "--smoke"), iters, only.as_deref())
}

/// The benchmarks `--only` can pick (comma-separated).
const SECTIONS: [&str; 7] = ["exec", "native", "dispatch", "growth", "browsers", "peers", "functions"];

/// The smoke run of `cargo xtask test` (which has built everything already).
pub fn smoke() -> anyhow::Result<()> {
    measure(&idlecore_e2e::Paths::workspace(), true, 1, None)
}

/// Runs the benchmarks (`only`: some of them, printed and not written to
/// docs/benchmarks.md, which always shows a whole run).
fn measure(paths: &idlecore_e2e::Paths, smoke: bool, iters: u32, only: Option<&[String]>) -> anyhow::Result<()> {
    let mut targets = Table::default();
    let sizes = if smoke { dispatch::Sizes::smoke() } else { dispatch::Sizes::full() };
    let wanted = |name: &str| only.is_none_or(|o| o.iter().any(|s| s == name));
    let mut sections = Vec::new();
    // The smoke run leaves out the execution benchmark: `wasm-pack test` runs
    // tests/bench_exec.rs in every browser test run.
    if !smoke && wanted("exec") {
        sections.push(exec::section(iters, &mut targets)?);
    }
    if wanted("native") {
        sections.push(native::section(paths, iters, smoke, &mut targets)?);
    }
    if wanted("dispatch") {
        sections.push(dispatch::dispatch(paths, &sizes, &mut targets)?);
    }
    if wanted("growth") {
        sections.push(dispatch::growth(paths, &sizes, &mut targets)?);
    }
    if wanted("browsers") {
        sections.push(browsers::section(paths, smoke, &mut targets)?);
    }
    if wanted("peers") {
        sections.push(peers::section(smoke)?);
    }
    if wanted("functions") {
        sections.push(functions::section(paths, smoke, &mut targets)?);
    }
    let date = Command::new("date").arg("-u").arg("+%Y-%m-%d").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let command = if smoke { "cargo xtask bench --smoke".to_string() } else { format!("cargo xtask bench --iters {iters}") };
    let mut md = format!(
        "# Benchmarks\n\nWritten by `{command}` on {date}; machine: {}.\n\
         Shared, noisy machines: read the ratios, not the absolute times. Every figure stands beside a baseline\n\
         measured in the same run.\n\n",
        machine()
    );
    md.push_str(&targets.markdown());
    for s in sections {
        md.push('\n');
        md.push_str(&s);
    }
    md.push('\n');
    md.push_str(&std::fs::read_to_string(root().join("xtask/src/benchmarks-notes.md"))?);
    if smoke || only.is_some() {
        print!("{md}");
        let ran = if smoke { "every benchmark ran at a tiny size" } else { "printed the benchmarks picked" };
        eprintln!("xtask: bench: {ran}; docs/benchmarks.md left as it is (it shows whole runs only)");
        return Ok(());
    }
    md.push('\n');
    md.push_str(&crate::sabotage::table(100_000)?);
    std::fs::write(root().join("docs/benchmarks.md"), &md)?;
    print!("{md}");
    Ok(())
}
