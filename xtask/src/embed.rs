//! The embed tests (`tests/embed`): the packed npm package, the script tag and
//! the visitor's controls in headless Chromium, driven by Node's test runner
//! and playwright-core; the WebRTC tests in a network namespace. Needs
//! `build::all()` first.

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
    // The `.gz` copies the coordinator serves are not part of the package.
    let files = packed[0]["files"].as_array().context("npm pack listed no files")?;
    let gz: Vec<_> = files.iter().filter_map(|f| f["path"].as_str()).filter(|p| p.ends_with(".gz")).collect();
    anyhow::ensure!(gz.is_empty(), "npm pack took precompressed copies: {gz:?}");
    anyhow::ensure!(files.iter().any(|f| f["path"] == "idlecore_wasm_bg.wasm"), "npm pack left out the wasm");
    Ok(dest.join(name))
}

/// Installs the test dependencies and the package under test, exactly as packed.
pub fn prepare() -> anyhow::Result<()> {
    let tarball = pack()?;
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix", DIR]))?;
    // Not recorded in the lock file.
    run(Command::new("npm").args(["install", "--no-save", "--no-audit", "--no-fund", "--prefix", DIR]).arg(&tarball))
}

/// The `*.test.mjs` files of `dir` (relative to the workspace), sorted.
fn test_files(dir: &str) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<String> = std::fs::read_dir(root().join(dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".test.mjs"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    files.sort();
    Ok(files)
}

fn node_test(files: &[String]) -> Command {
    let mut cmd = Command::new("node");
    // Browsers are heavy on two cores: one file at a time.
    cmd.args(["--test", "--test-concurrency=1", "--test-reporter=spec"]).args(files);
    cmd
}

pub fn test() -> anyhow::Result<()> {
    prepare()?;
    run(&mut node_test(&test_files(DIR)?))
}

/// The WebRTC tests (`tests/embed/webrtc`), inside a network namespace made
/// for them (see [`Netns`]).
pub fn test_webrtc() -> anyhow::Result<()> {
    prepare()?;
    let files = test_files(&format!("{DIR}/webrtc"))?;
    let ns = Netns::create()?;
    run(&mut ns.exec(node_test(&files)))
}

/// A network namespace with loopback and a veth pair whose far end is the
/// default route: Chromium gathers host candidates on it (it gathers none on
/// loopback), and nothing leaves the machine. Deleted when dropped. Needs
/// root (CI runs as root).
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create() -> anyhow::Result<Netns> {
        let name = format!("idc-rtc-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name])).context("creating a network namespace (needs root)")?;
        let ns = Netns { name };
        for cmd in [
            "ip link set lo up",
            "ip link add veth0 type veth peer name veth1",
            "ip addr add 10.99.0.1/24 dev veth0",
            "ip addr add 10.99.0.2/24 dev veth1",
            "ip link set veth0 up",
            "ip link set veth1 up",
            "ip route add default via 10.99.0.2",
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            run(Command::new("ip").args(["netns", "exec", &ns.name]).args(&args))?;
        }
        Ok(ns)
    }

    /// `cmd` run inside the namespace (same arguments, environment and directory).
    pub fn exec(&self, cmd: Command) -> Command {
        let mut inner = Command::new("ip");
        inner.args(["netns", "exec", &self.name]).arg(cmd.get_program()).args(cmd.get_args());
        if let Some(dir) = cmd.get_current_dir() {
            inner.current_dir(dir);
        }
        inner
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
