//! The native worker's engine (`idlecore worker`, wasmtime with the
//! project's WASI host), timed by `native_exec` (tests/e2e/src/bin): the
//! CPU-bound workloads of `exec.rs` as the worker runs them (the sandboxed
//! module, fuel meter on, a kept instance reset between runs) beside the
//! natively built task, plain wasmtime running the unsandboxed module with
//! its own WASI (the wasmtime Python package), and the fixed cost per task
//! of an empty module beside a new instance per run.

use super::exec::{native_ms, wasmtime_ms, WORKLOADS};
use super::Table;
use crate::build;
use anyhow::{bail, Context};
use idlecore_e2e::proto_worker::Received;
use idlecore_e2e::{wait_for, NativeWorker, Paths, ProtoWorker};
use idlecore_protocol::{CoordinatorMessage, TaskResult, WorkerMessage};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

/// Who runs the tiny tasks of the throughput rows.
#[derive(Clone, Copy)]
enum Runner {
    /// `idlecore worker --slots N`.
    Native(u32),
    /// A protocol client that answers every lease at once without running
    /// it, holding as many leases as the native worker does (the baseline:
    /// the coordinator's and the transport's own cost).
    Answering(u32),
}

/// Tasks per second of a job of `tasks` empty tasks through a real coordinator.
fn tasks_per_second(paths: &Paths, runner: Runner, tasks: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let c = super::plain_coordinator(paths, &dir.path().join("data"))?;
    let api = c.api();
    let module = api.upload(&std::fs::read(build::sandboxed_dir().join("empty.wasm"))?)?;
    let mut native = None;
    let mut answering = None;
    match runner {
        Runner::Native(slots) => {
            native = Some(NativeWorker::start(&paths.bin, &c.base_url(), &["--slots", &slots.to_string(), "--no-cache"])?)
        }
        Runner::Answering(slots) => {
            // The native worker holds two leases per slot (one running, one queued).
            let (mut w, _) = ProtoWorker::join(c.addr, slots * 2)?;
            answering = Some(std::thread::spawn(move || {
                while let Ok(received) = w.recv() {
                    let leases = match received {
                        Received::Msg(CoordinatorMessage::Lease(l)) => vec![l],
                        Received::Msg(CoordinatorMessage::Leases(ls)) => ls,
                        Received::Msg(_) => continue,
                        Received::Closed => break,
                    };
                    for l in leases {
                        let done = TaskResult {
                            lease: l.lease,
                            exit_code: 0,
                            stdout: vec![],
                            stderr: vec![],
                            elapsed_ms: 0,
                            fuel_used: 0,
                            files: vec![],
                        };
                        if w.send(&WorkerMessage::Result(done)).is_err() {
                            return;
                        }
                    }
                }
            }));
        }
    }
    wait_for("the worker to join", Duration::from_secs(60), || (api.stats().ok()?["workers"].as_u64()? >= 1).then_some(()))?;
    // One warm-up task (the module compiled), then the measured job.
    let warm = api.create_job(&module, &[vec![]], &[], json!({}))?;
    wait_for("the warm-up", Duration::from_secs(60), || (api.status(warm).ok()?["state"] == "completed").then_some(()))?;
    let started = Instant::now();
    let job = api.create_job(&module, &vec![vec![]; tasks], &[], json!({}))?;
    wait_for("the job", Duration::from_secs(600), || (api.status(job).ok()?["state"] == "completed").then_some(()))?;
    let rate = tasks as f64 / started.elapsed().as_secs_f64();
    drop(native);
    drop(c);
    if let Some(t) = answering {
        let _ = t.join();
    }
    Ok(rate)
}

/// Mean milliseconds per run of `module` (a file in target/sandboxed) in the native engine.
fn engine_ms(paths: &Paths, module: &str, runs: u32, stdin: &[u8], args: &[&str], fresh: bool) -> anyhow::Result<f64> {
    let dir = build::sandboxed_dir();
    let stdin_file = dir.join(format!("{module}.native.stdin"));
    std::fs::write(&stdin_file, stdin)?;
    let mut cmd = Command::new(paths.native_tasks.join("native_exec"));
    cmd.arg(dir.join(module)).arg(runs.to_string()).arg(&stdin_file);
    if fresh {
        cmd.arg("--fresh");
    }
    let out = cmd.arg("--").args(args).output().context("running native_exec (built by `cargo xtask build`)")?;
    if !out.status.success() {
        bail!("native_exec {module} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The native engine's tables; their targets go to `targets`.
pub fn section(paths: &Paths, iters: u32, smoke: bool, targets: &mut Table) -> anyhow::Result<String> {
    let mut md = String::from(
        "## Execution in the native worker\n\n\
         `idlecore worker`'s engine (wasmtime 48, Cranelift, with the project's WASI host) on the sandboxed module,\n\
         fuel meter on, one instance kept and reset between runs, as the worker runs tasks (`native_exec`).\n\
         Plain wasmtime: the Python package's wasmtime with its own WASI on the unsandboxed module, compiled once,\n\
         a new instance per run.\n\n\
         | workload | native (process start included) | plain wasmtime | idlecore native worker | own cost vs plain wasmtime |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for w in &WORKLOADS {
        let runs = if smoke { 1 } else { iters };
        let (native, plain) = (native_ms(w, runs)?, wasmtime_ms(w, runs)?);
        let ours = engine_ms(paths, &format!("{}.sandboxed.wasm", w.name), runs, w.stdin, w.args, false)?;
        let ratio = ours / plain;
        md.push_str(&format!(
            "| {} | {native:.1} ms (1.00x) | {plain:.1} ms ({:.2}x) | {ours:.1} ms ({:.2}x) | {ratio:.2}x |\n",
            w.what,
            plain / native,
            ours / native
        ));
        targets.row(&format!("native worker's own cost ≤ 1.05x plain wasmtime: {}", w.what), &format!("{ratio:.2}x"), ratio <= 1.05);
    }
    let runs = if smoke { 10 } else { 20_000 };
    let kept = engine_ms(paths, "empty.sandboxed.wasm", runs, b"", &[], false)? * 1000.0;
    let fresh = engine_ms(paths, "empty.sandboxed.wasm", runs, b"", &[], true)? * 1000.0;
    md.push_str(&format!(
        "\n| fixed cost per task (empty module) | µs | baseline | ratio | runs |\n| --- | --- | --- | --- | --- |\n\
         | kept instance, reset (as the worker runs) | {kept:.1} | {fresh:.1} (a new instance each run) | {:.2}x | {runs} |\n",
        kept / fresh
    ));
    targets.row(
        "native worker's fixed cost per task ≤ 20 µs (empty module, WASI setup, limits, reset, result)",
        &format!("{kept:.1} µs"),
        kept <= 20.0,
    );

    let tasks = if smoke { 200 } else { 20_000 };
    md.push_str(
        "\nTiny tasks (an empty module) through a real coordinator: tasks/s of one `idlecore worker`, beside a protocol\n         client that answers each lease at once without running it (the coordinator's and the transport's own cost).\n\n         | slots | native worker | answering at once | ratio | tasks |\n| --- | --- | --- | --- | --- |\n",
    );
    for slots in [1, 2] {
        let ours = tasks_per_second(paths, Runner::Native(slots), tasks)?;
        let baseline = tasks_per_second(paths, Runner::Answering(slots), tasks)?;
        md.push_str(&format!("| {slots} | {ours:.0} tasks/s | {baseline:.0} tasks/s | {:.2}x | {tasks} |\n", ours / baseline));
    }
    Ok(md)
}
