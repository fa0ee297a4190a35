//! Execution: the fixed cost per task, the round trip to an executor Worker,
//! and two CPU-bound workloads (a floating-point Mandelbrot tile and an
//! integer SHA-256 chain) in headless Chromium (`tests/bench_exec.rs`, release
//! build); the same workloads as native binaries and in wasmtime (the engine gap).

use super::Table;
use crate::{build, root};
use anyhow::{bail, Context};
use std::process::{Command, Stdio};
use std::time::Instant;

/// A CPU-bound workload every engine runs (the same as in tests/bench_exec.rs).
pub(super) struct Workload {
    pub(super) key: &'static str,
    /// Task binary (native) and module (`NAME.wasm`) name.
    pub(super) name: &'static str,
    pub(super) what: &'static str,
    pub(super) args: &'static [&'static str],
    pub(super) stdin: &'static [u8],
}

pub(super) const WORKLOADS: [Workload; 4] = [
    Workload {
        key: "tile",
        name: "mandelbrot",
        what: "Mandelbrot tile (floating point)",
        args: &["--tiles", "8", "--size", "64", "--iter", "2000"],
        stdin: b"3 4\n",
    },
    Workload { key: "chain", name: "hashchain", what: "SHA-256 chain (integer)", args: &["--rounds", "20000"], stdin: b"idlecore\n" },
    Workload {
        key: "bulk",
        name: "hashchain",
        what: "SHA-256 over 64 MiB (streaming through memory)",
        args: &["--bulk-mib", "64", "--rounds", "0"],
        stdin: b"idlecore\n",
    },
    Workload {
        key: "sort",
        name: "sort",
        what: "sort of 1,000,000 integers (memory-bound)",
        args: &["--n", "1000000"],
        stdin: b"idlecore\n",
    },
];

struct Row {
    key: String,
    name: String,
    unit: String,
    value: f64,
    baseline_name: String,
    baseline: f64,
    runs: u64,
}

fn browser_rows(iters: u32) -> anyhow::Result<Vec<Row>> {
    let out = Command::new("wasm-pack")
        .args(["test", "--headless", "--chrome", "--release", "--mode", "no-install", "--test", "bench_exec", "--", "--nocapture"])
        .env("IDLECORE_BENCH_ITERS", iters.to_string())
        .env("WASM_BINDGEN_TEST_TIMEOUT", "600")
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .context("running the browser benchmarks")?;
    if !out.status.success() {
        bail!("the browser benchmarks failed:\n{}", String::from_utf8_lossy(&out.stdout));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BENCH "))
        .map(|json| {
            let v: serde_json::Value = serde_json::from_str(json)?;
            Ok(Row {
                key: v["key"].as_str().unwrap_or_default().into(),
                name: v["name"].as_str().unwrap_or_default().into(),
                unit: v["unit"].as_str().unwrap_or_default().into(),
                value: v["value"].as_f64().unwrap_or(f64::NAN),
                baseline_name: v["baseline_name"].as_str().unwrap_or_default().into(),
                baseline: v["baseline"].as_f64().unwrap_or(f64::NAN),
                runs: v["runs"].as_u64().unwrap_or(0),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if rows.is_empty() {
        bail!("the browser benchmarks printed no BENCH lines");
    }
    Ok(rows)
}

/// Mean milliseconds of the natively built workload (process start included).
pub(super) fn native_ms(w: &Workload, runs: u32) -> anyhow::Result<f64> {
    let bin = idlecore_e2e::Paths::workspace().native_tasks.join(w.name);
    let args: Vec<String> = w.args.iter().map(|s| s.to_string()).collect();
    idlecore_e2e::run_native(&bin, &args, w.stdin)?;
    let start = Instant::now();
    for _ in 0..runs {
        idlecore_e2e::run_native(&bin, &args, w.stdin)?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / runs as f64)
}

/// Mean milliseconds of instantiate + `_start` of the workload in wasmtime (compiled once).
pub(super) fn wasmtime_ms(w: &Workload, runs: u32) -> anyhow::Result<f64> {
    const SCRIPT: &str = r#"
import sys, time, wasmtime
module_path, runs, stdin_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
args = sys.argv[4:]
engine = wasmtime.Engine()
module = wasmtime.Module.from_file(engine, module_path)
def once():
    config = wasmtime.WasiConfig()
    config.argv = ["task.wasm"] + args
    config.stdin_file = stdin_path
    config.stdout_file = "/dev/null"
    store = wasmtime.Store(engine)
    store.set_wasi(config)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.instantiate(store, module).exports(store)["_start"](store)
once()
start = time.perf_counter()
for _ in range(runs):
    once()
print((time.perf_counter() - start) * 1000 / runs)
"#;
    let dir = build::sandboxed_dir();
    let stdin = dir.join(format!("{}.stdin", w.key));
    std::fs::write(&stdin, w.stdin)?;
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(dir.join(format!("{}.wasm", w.name)))
        .arg(runs.to_string())
        .arg(&stdin)
        .args(w.args)
        .output()
        .context("running wasmtime")?;
    if !out.status.success() {
        bail!("wasmtime benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn row<'a>(rows: &'a [Row], key: &str) -> anyhow::Result<&'a Row> {
    rows.iter().find(|r| r.key == key).with_context(|| format!("the browser benchmarks printed no `{key}` row"))
}

/// The execution tables; their targets go to `targets`.
pub fn section(iters: u32, targets: &mut Table) -> anyhow::Result<String> {
    let rows = browser_rows(iters)?;
    let mut md = String::from(
        "## Execution in the browser sandbox\n\n\
         Measured in a dedicated Worker of headless Chromium (`tests/bench_exec.rs`, release build).\n\n\
         | measurement | idlecore | baseline | ratio | runs |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.1} {} | {:.1} {} ({}) | {:.2}x | {} |\n",
            r.name,
            r.value,
            r.unit,
            r.baseline,
            r.unit,
            r.baseline_name,
            r.value / r.baseline,
            r.runs
        ));
    }
    md.push_str("\n### The engine gap\n\n| workload | native (process start included) | wasmtime (compiled once; instantiate + run) | Chromium, idlecore executor runner (sandboxed) |\n| --- | --- | --- | --- |\n");
    for w in &WORKLOADS {
        let (native, wasmtime) = (native_ms(w, iters)?, wasmtime_ms(w, iters)?);
        let ours = row(&rows, &format!("{}_meter", w.key))?.value;
        md.push_str(&format!(
            "| {} | {native:.1} ms (1.00x) | {wasmtime:.1} ms ({:.2}x) | {ours:.1} ms ({:.2}x) |\n",
            w.what,
            wasmtime / native,
            ours / native
        ));
    }
    let (empty, trip) = (row(&rows, "fixed_empty")?, row(&rows, "round_trip")?);
    targets.row(
        "fixed cost per task ≤ 100 µs: what the executor adds to a run (reset, WASI setup, limits, result)",
        &format!("{:.0} µs", empty.value),
        empty.value <= 100.0,
    );
    targets.row(
        "fixed cost per task ≤ 100 µs, with the agent ↔ executor messages",
        &format!("{:.0} µs (of which the browser's own message round trip: {:.0} µs)", trip.value, trip.baseline),
        trip.value <= 100.0,
    );
    for w in &WORKLOADS {
        let bare = row(&rows, &format!("{}_bare", w.key))?;
        let ratio = bare.value / bare.baseline;
        targets.row(
            &format!("idlecore's own cost on a CPU-bound module ≤ 1.02x vs the same module bare in the same browser: {}", w.what),
            &format!("{ratio:.2}x"),
            ratio <= 1.02,
        );
    }
    Ok(md)
}
