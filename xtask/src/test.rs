//! `cargo xtask test`: every test. First the fast checks (`lint`: rustfmt,
//! clippy natively and for wasm32), so a lint failure shows in seconds. Then native unit and integration tests, browser
//! tests in headless Chromium (wasm-pack test), end-to-end tests against the
//! release build, the embed tests (npm package, script tag, consent, CPU
//! budget; see `embed.rs`), peer transfers over WebRTC in a network
//! namespace, a small chaos run (see `chaos.rs`), then every benchmark at a
//! tiny size (`bench --smoke`: nothing fails on a time, but none rots).

use crate::{build, flag_value, tools};
use anyhow::bail;
use std::process::Command;

/// The groups, in the order a whole run takes them; `lint` needs no build.
const GROUPS: [&str; 8] = ["lint", "unit", "browser", "e2e", "embed", "webrtc", "chaos", "bench"];

pub fn run_group(group: &str) -> anyhow::Result<()> {
    match group {
        "lint" => lint(),
        "unit" => {
            crate::run(Command::new("cargo").args(["test", "--workspace", "--exclude", "idlecore-e2e"]))?;
            // The coordinator builds without WebRTC too (`--no-default-features`).
            crate::run(Command::new("cargo").args(["check", "-p", "idlecore-coordinator", "-p", "idlecore-cli", "--no-default-features"]))
        }
        "browser" => {
            // The browser tests' targets embed modules the build makes, so
            // their lint waits for it (the library's ran in `lint`).
            let wasm_tests = ["clippy", "-p", "idlecore", "--target", "wasm32-unknown-unknown", "--tests", "--", "-D", "warnings"];
            crate::run(Command::new("cargo").args(wasm_tests))?;
            crate::run(
                Command::new("wasm-pack")
                    .args(["test", "--headless", "--chrome", "--mode", "no-install"])
                    .env("WASM_BINDGEN_TEST_TIMEOUT", "120"),
            )
        }
        // Browsers are heavy on two cores: one end-to-end test at a time.
        "e2e" => crate::run(Command::new("cargo").args(["test", "-p", "idlecore-e2e", "--", "--test-threads=1"])),
        // The npm package, script tag, consent and CPU budget in headless Chromium.
        "embed" => crate::embed::test(),
        // Peer transfers in headless Chromium, in a network namespace.
        "webrtc" => crate::embed::test_webrtc(),
        // A small chaos run: every result checked after worker and coordinator kills.
        "chaos" => crate::chaos::check(&crate::chaos::Config {
            tasks: 150,
            kill_workers: 0.3,
            kill_coordinator: 2,
            browsers: 1,
            natives: 1,
            loadgens: 2,
            loadgen_workers: 4,
            seed: 7,
        }),
        "bench" => crate::bench::smoke(),
        other => bail!("unknown test group {other:?} ({})", GROUPS.join(", ")),
    }
}

/// Formatting and clippy (warnings are errors) over every target, natively
/// and for the browser worker's wasm32 build.
fn lint() -> anyhow::Result<()> {
    crate::run(Command::new("cargo").args(["fmt", "--all", "--check"]))?;
    crate::run(Command::new("cargo").args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The browser worker's library for wasm32 (its tests' lint is in `browser`).
    crate::run(Command::new("cargo").args([
        "clippy",
        "-p",
        "idlecore",
        "--target",
        "wasm32-unknown-unknown",
        "--lib",
        "--",
        "-D",
        "warnings",
    ]))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let only = flag_value(args, "--only")?;
    if let Some(group) = only.filter(|g| !GROUPS.contains(g)) {
        bail!("unknown test group {group:?} ({})", GROUPS.join(", "));
    }
    tools::ensure()?;
    match only {
        Some("lint") => lint(),
        Some(group) => {
            build::all()?;
            run_group(group)
        }
        None => {
            lint()?;
            build::all()?;
            for group in &GROUPS[1..] {
                run_group(group)?;
            }
            eprintln!("xtask: all test groups passed");
            Ok(())
        }
    }
}
