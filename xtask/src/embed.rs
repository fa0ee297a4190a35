//! The embed tests (`tests/embed`): the packed npm package, the script tag and
//! the visitor's controls in headless Chromium, driven by Node's test runner
//! and playwright-core. Needs `build::all()` first.

use crate::{root, run};
use anyhow::Context;
use std::process::Command;

const DIR: &str = "tests/embed";

/// Packs `pkg/` as npm would publish it and returns the tarball's path.
pub fn pack() -> anyhow::Result<std::path::PathBuf> {
    let dest = root().join("target/embed");
    std::fs::create_dir_all(&dest)?;
    let out = Command::new("npm")
        .args(["pack", "./pkg", "--json", "--pack-destination"])
        .arg(&dest)
        .current_dir(root())
        .output()
        .context("running npm pack")?;
    anyhow::ensure!(out.status.success(), "npm pack failed: {}", String::from_utf8_lossy(&out.stderr));
    let packed: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading npm pack --json")?;
    let name = packed[0]["filename"].as_str().context("npm pack named no file")?;
    Ok(dest.join(name))
}

pub fn test() -> anyhow::Result<()> {
    let tarball = pack()?;
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix", DIR]))?;
    // The package under test, exactly as packed (not recorded in the lock file).
    run(Command::new("npm").args(["install", "--no-save", "--no-audit", "--no-fund", "--prefix", DIR]).arg(&tarball))?;
    let mut files: Vec<String> = std::fs::read_dir(root().join(DIR))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".test.mjs"))
        .map(|n| format!("{DIR}/{n}"))
        .collect();
    files.sort();
    // Browsers are heavy on two cores: one file at a time.
    run(Command::new("node").args(["--test", "--test-concurrency=1", "--test-reporter=spec"]).args(&files))
}
