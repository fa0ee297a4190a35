//! The native worker's engine timed on one module, for `cargo xtask bench`:
//! compiled once, then run RUNS times in a kept instance (reset between
//! runs, as an executor does) or, with `--fresh`, a new instance each time.
//! Prints the mean milliseconds per run.
//!
//! usage: native_exec MODULE RUNS STDIN_FILE [--fresh] [-- ARGS...]

use idlecore_native_engine::engine::{runtime, Executor, RunLimits};
use idlecore_native_engine::host::Stop;
use idlecore_protocol::Sha256Hash;
use idlecore_wasi_host::WasiCtx;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (ours, task_args) = match argv.iter().position(|a| a == "--") {
        Some(i) => (&argv[..i], &argv[i + 1..]),
        None => (&argv[..], &[][..]),
    };
    let [module, runs, stdin, rest @ ..] = ours else { anyhow::bail!("usage: native_exec MODULE RUNS STDIN_FILE [--fresh] [-- ARGS...]") };
    let fresh = rest.iter().any(|a| a == "--fresh");
    let runs: u32 = runs.parse()?;
    let wasm = std::fs::read(module)?;
    let stdin = std::fs::read(stdin)?;
    let compiled = runtime().compile(Sha256Hash::of(&wasm), &wasm).map_err(anyhow::Error::msg)?;
    let limits = RunLimits { fuel: 0, max_memory_pages: 65536 };
    let ctx = || WasiCtx::new("task.wasm", task_args, &[], stdin.clone(), 1, 64 << 20);
    let mut kept = Executor::default();
    let once = |kept: &mut Executor| {
        let mut fresh_one = Executor::default();
        let executor = if fresh { &mut fresh_one } else { kept };
        let out = executor.run(&compiled, ctx(), limits, &Stop::default()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(out.exit_code == 0, "the task exited with {}", out.exit_code);
        Ok(())
    };
    once(&mut kept)?;
    let start = Instant::now();
    for _ in 0..runs {
        once(&mut kept)?;
    }
    println!("{}", start.elapsed().as_secs_f64() * 1000.0 / runs as f64);
    Ok(())
}
