//! Headless Chromium as a worker: the flags that work offline on a server,
//! shared by `idlecore run`, the demo and the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The Chromium binary: `$IDLECORE_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("IDLECORE_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Flags for a headless page that keeps running, with a profile of its own.
pub fn chromium_flags(profile: &Path) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        // Keeps the headless browser alive with the page open.
        "--remote-debugging-port=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// Starts headless Chromium on `url`; its output is discarded.
pub fn open(url: &str, profile: &Path) -> std::io::Result<Child> {
    Command::new(chromium_path())
        .args(chromium_flags(profile))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}
