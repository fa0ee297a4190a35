//! Installs what the build and tests need, only where it is missing:
//! wasm targets, wasm-bindgen-cli at the Cargo.lock version, wasm-pack,
//! Chromium with its matching ChromeDriver, Node.js and npm, binaryen's
//! wasm-opt (from npm: Debian's is too old for current Rust output), clang
//! with wasi-libc (for the C test task), iproute2 (`ip netns`, for the WebRTC
//! tests), and the wasmtime Python package (the reference WASI runtime of the
//! conformance tests).

use crate::{root, run};
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    Command::new(cmd).args(args).output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The `wasm-bindgen` version pinned in Cargo.lock.
pub fn wasm_bindgen_version() -> anyhow::Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_string());
            }
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

/// binaryen's npm build (a Node script), for wasm-opt.
const BINARYEN: &str = "132.0.0";

/// The wasm-opt the build runs (with `node`).
pub fn wasm_opt() -> std::path::PathBuf {
    root().join("target/tools/node_modules/binaryen/bin/wasm-opt")
}

/// terser, which minifies the package's scripts.
const TERSER: &str = "5.51.4";

/// The terser the build runs (with `node`).
pub fn terser() -> std::path::PathBuf {
    root().join("target/tools/node_modules/terser/bin/terser")
}

/// The wasmtime Python package the conformance tests compare against.
const WASMTIME_PY: &str = "50.0.1";

pub fn ensure() -> anyhow::Result<()> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    for target in ["wasm32-unknown-unknown", "wasm32-wasip1"] {
        if !installed.lines().any(|l| l.trim() == target) {
            run(Command::new("rustup").args(["target", "add", target]))?;
        }
    }

    let want = wasm_bindgen_version()?;
    let have = output("wasm-bindgen", &["--version"]).unwrap_or_default();
    if have.split_whitespace().nth(1) != Some(want.as_str()) {
        // No --locked: the registry here lacks one of its pinned dependencies.
        run(Command::new("cargo").args(["install", "wasm-bindgen-cli", "--version", &want]))?;
    }
    if output("wasm-pack", &["--version"]).is_none() {
        run(Command::new("cargo").args(["install", "wasm-pack"]))?;
    }

    let mut packages = Vec::new();
    if !Path::new("/usr/bin/chromium").exists() {
        packages.push("chromium");
    }
    if !Path::new("/usr/bin/chromedriver").exists() {
        packages.push("chromium-driver");
    }
    // `ip netns` for the WebRTC tests' network namespace.
    if output("ip", &["-V"]).is_none() {
        packages.push("iproute2");
    }
    if output("node", &["--version"]).is_none() || output("npm", &["--version"]).is_none() {
        packages.extend(["nodejs", "npm"]);
    }
    let builtins = output("sh", &["-c", "ls /usr/lib/llvm-14/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a"]);
    if output("clang", &["--version"]).is_none()
        || output("wasm-ld", &["--version"]).is_none()
        || !Path::new("/usr/include/wasm32-wasi/stdio.h").exists()
        || builtins.is_none()
    {
        packages.extend(["clang", "lld", "wasi-libc", "libclang-rt-14-dev-wasm32"]);
    }
    if !packages.is_empty() {
        let sudo = if output("id", &["-u"]).as_deref().map(str::trim) == Some("0") { vec![] } else { vec!["sudo"] };
        let apt = |args: &[&str]| {
            let mut full: Vec<&str> = sudo.clone();
            full.push("apt-get");
            full.extend_from_slice(args);
            run(Command::new(full[0]).args(&full[1..]).env("DEBIAN_FRONTEND", "noninteractive"))
        };
        apt(&["update", "-q"])?;
        let mut install = vec!["install", "-y", "-q"];
        install.extend(&packages);
        apt(&install)?;
    }
    if !wasm_opt().exists() || !terser().exists() {
        let prefix = root().join("target/tools");
        std::fs::create_dir_all(&prefix)?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--no-save", "--prefix"])
            .arg(&prefix)
            .arg(format!("binaryen@{BINARYEN}"))
            .arg(format!("terser@{TERSER}")))?;
    }
    if output("python3", &["-c", "import wasmtime"]).is_none() {
        run(Command::new("python3").args(["-m", "pip", "install", "--quiet", &format!("wasmtime=={WASMTIME_PY}")]))?;
    }
    Ok(())
}
