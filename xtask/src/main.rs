//! `cargo xtask build | demo | test | bench | chaos | sabotage`: the project's automation. Each command
//! first installs whatever it needs and is missing (see `tools`).

mod bench;
mod build;
mod chaos;
mod demo;
mod embed;
mod picture;
mod sabotage;
mod test;
mod tools;

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::Command;

const USAGE: &str = "usage:
  cargo xtask build                    build the browser package, the coordinator and the example tasks
  cargo xtask demo [--visitors K] [--once] [--port P]
                                       run the coordinator, K headless browser visitors (default 2; 0 to use
                                       your own browser), submit the example job and write its picture
  cargo xtask test [--only lint|unit|browser|e2e|embed|webrtc|chaos|bench]
                                       run every test (or one group; lint: rustfmt and
                                       clippy, first and without a build)
  cargo xtask bench [--iters N] [--smoke] [--only exec,dispatch,growth,browsers,peers]
                                       measure execution, coordinator dispatch, growth, end to end,
                                       start-up and peer transfers, each beside a baseline; writes
                                       docs/benchmarks.md
                                       (--smoke: every benchmark at a tiny size, nothing written;
                                       --only: just those, printed, nothing written)
  cargo xtask chaos [--tasks N] [--kill-workers FRACTION] [--kill-coordinator K]
                    [--browsers B] [--loadgens L] [--loadgen-workers W] [--seed S]
                                       run a job while killing workers and the coordinator; check every result
  cargo xtask sabotage [--saboteurs F] [--collude] [--strategy eager|patient] [--rate S] [--tasks N]
                       [--workers W] [--seed S] [--replicas K] [--spot-checks R] [--trust-threshold N]
                       [--no-validation] | --table [--tasks N]
                                       the scheduler and validator against simulated cheating workers:
                                       prints accepted-wrong R, overhead X (or the benchmark table)";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => tools::ensure().and_then(|_| build::all()).map(|_| ()),
        Some("demo") => demo::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("chaos") => chaos::run(&args[1..]),
        Some("sabotage") => sabotage::run(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

/// Runs a command in the workspace root, failing with its command line if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let line = format!("{cmd:?}");
    eprintln!("xtask: $ {line}");
    let status = cmd.current_dir(root()).status().with_context(|| format!("starting {line}"))?;
    if !status.success() {
        bail!("{line} failed with {status}");
    }
    Ok(())
}

/// The value after `--flag` in `args`, if present.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> anyhow::Result<Option<&'a str>> {
    match args.iter().position(|a| a == flag) {
        None => Ok(None),
        Some(i) => args.get(i + 1).map(|s| Some(s.as_str())).with_context(|| format!("{flag} needs a value")),
    }
}
