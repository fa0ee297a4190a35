//! `cargo xtask test`: every test. Native unit and integration tests, browser
//! tests in headless Chromium (wasm-pack test), then end-to-end tests against
//! the release build.

use crate::{build, flag_value, tools};
use anyhow::bail;
use std::process::Command;

pub fn run_group(group: &str) -> anyhow::Result<()> {
    match group {
        "unit" => crate::run(Command::new("cargo").args(["test", "--workspace", "--exclude", "idlecore-e2e"])),
        "browser" => crate::run(
            Command::new("wasm-pack")
                .args(["test", "--headless", "--chrome", "--mode", "no-install"])
                .env("WASM_BINDGEN_TEST_TIMEOUT", "120"),
        ),
        // Browsers are heavy on two cores: one end-to-end test at a time.
        "e2e" => crate::run(Command::new("cargo").args(["test", "-p", "idlecore-e2e", "--", "--test-threads=1"])),
        other => bail!("unknown test group {other:?} (unit, browser, e2e)"),
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let only = flag_value(args, "--only")?;
    tools::ensure()?;
    build::all()?;
    match only {
        Some(group) => run_group(group),
        None => {
            for group in ["unit", "browser", "e2e"] {
                run_group(group)?;
            }
            eprintln!("xtask: all test groups passed");
            Ok(())
        }
    }
}
