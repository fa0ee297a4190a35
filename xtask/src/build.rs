//! Builds everything the demo and the tests use (release profile).

use crate::{root, run};
use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;

/// Example and test task crates, built for wasm32-wasip1 and natively.
pub const TASKS: &[&str] = &["mandelbrot-task", "wasi-probe-task", "wasi-conformance-task", "hashchain-task"];

pub fn all() -> anyhow::Result<idlecore_e2e::Paths> {
    package()?;
    let mut cargo = Command::new("cargo");
    cargo.args(["build", "--release", "-p", "idlecore-coordinator"]);
    for p in TASKS {
        cargo.args(["-p", p]);
    }
    run(&mut cargo)?;
    // Alone: `--bin` would restrict every package in the same command.
    run(Command::new("cargo").args(["build", "--release", "-p", "idlecore-e2e", "--bin", "loadgen"]))?;
    let mut wasi = Command::new("cargo");
    wasi.args(["build", "--release", "--target", "wasm32-wasip1"]);
    for p in TASKS {
        wasi.args(["-p", p]);
    }
    run(&mut wasi)?;
    let paths = idlecore_e2e::Paths::workspace();
    // The C conformance program, against Debian's wasi-libc.
    run(Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "tests/tasks/c/conformance.c", "-o"])
        .arg(paths.tasks.join("wasi-conformance-c.wasm")))?;
    paths.check_built()?;
    sandboxed_modules(&paths)?;
    Ok(paths)
}

/// The browser package: wasm-pack's output plus the hand-written files in `pkg-config/`.
pub fn package() -> anyhow::Result<PathBuf> {
    let pkg = root().join("pkg");
    run(Command::new("wasm-pack").args(["build", "--release", "--target", "web", "--out-dir", "pkg", "--mode", "no-install", "--no-pack"]))?;
    for entry in std::fs::read_dir(root().join("pkg-config"))? {
        let from = entry?.path();
        let to = pkg.join(from.file_name().context("file name")?);
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
    }
    // wasm-pack writes a .gitignore of `*` that would hide everything from npm pack.
    let _ = std::fs::remove_file(pkg.join(".gitignore"));
    Ok(pkg)
}

/// Where browser tests and benchmarks find task modules, each raw
/// (`NAME.wasm`) and sandboxed as the coordinator serves it (`NAME.sandboxed.wasm`).
pub fn sandboxed_dir() -> PathBuf {
    root().join("target/sandboxed")
}

/// Writes every task module, and an empty command, raw and sandboxed.
fn sandboxed_modules(paths: &idlecore_e2e::Paths) -> anyhow::Result<()> {
    let dir = sandboxed_dir();
    std::fs::create_dir_all(&dir)?;
    let mut modules = vec![("empty".to_string(), wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)?)];
    for name in ["mandelbrot", "hashchain", "wasi-probe", "wasi-conformance", "wasi-conformance-c"] {
        modules.push((name.to_string(), std::fs::read(paths.tasks.join(format!("{name}.wasm")))?));
    }
    for (name, raw) in modules {
        let sandboxed = idlecore_coordinator::sandbox::instrument(&raw).with_context(|| format!("sandboxing {name}"))?;
        std::fs::write(dir.join(format!("{name}.wasm")), &raw)?;
        std::fs::write(dir.join(format!("{name}.sandboxed.wasm")), sandboxed)?;
    }
    Ok(())
}
