//! Builds everything the demo and the tests use (release profile).

use crate::{root, run};
use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;

/// Example and test task crates, built for wasm32-wasip1 and natively.
pub const TASKS: &[&str] =
    &["mandelbrot-task", "wasi-probe-task", "wasi-conformance-task", "hashchain-task", "numbers-agree-task", "sort-task", "thumbnail-task"];

pub fn all() -> anyhow::Result<idlecore_e2e::Paths> {
    package()?;
    // One command, so the CLI and the benchmark tools share one build of
    // every crate (separately, their features differ and the coordinator and
    // its dependencies were built twice). `--bins`: each package's binaries.
    let mut cargo = Command::new("cargo");
    cargo.args(["build", "--release", "--bins", "-p", "idlecore-cli", "-p", "idlecore-e2e"]);
    for p in TASKS {
        cargo.args(["-p", p]);
    }
    run(&mut cargo)?;
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
    // Whole-program LTO in one unit: the package has a size budget (native
    // release builds skip it, see Cargo.toml).
    run(Command::new("wasm-pack").env("CARGO_PROFILE_RELEASE_LTO", "fat").env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1").args([
        "build",
        "--release",
        "--target",
        "web",
        "--out-dir",
        "pkg",
        "--mode",
        "no-install",
        "--no-pack",
    ]))?;
    for entry in std::fs::read_dir(root().join("pkg-config"))? {
        let from = entry?.path();
        let to = pkg.join(from.file_name().context("file name")?);
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
    }
    // wasm-pack writes a .gitignore of `*` that would hide everything from npm pack.
    let _ = std::fs::remove_file(pkg.join(".gitignore"));
    optimize(&pkg.join("idlecore_wasm_bg.wasm"))?;
    minify_scripts(&pkg)?;
    precompress(&pkg)?;
    let (wasm, js) = shipped_gzip_bytes(&pkg)?;
    eprintln!(
        "xtask: package size, gzipped: wasm {:.1} KiB + scripts {:.1} KiB = {:.1} KiB (budget {} KiB)",
        wasm as f64 / 1024.0,
        js as f64 / 1024.0,
        (wasm + js) as f64 / 1024.0,
        SIZE_BUDGET_KIB
    );
    Ok(pkg)
}

/// What a visitor's browser may download, gzipped: script + wasm, at most this.
pub const SIZE_BUDGET_KIB: u64 = 150;

/// wasm-opt -O3 (binaryen from npm; see `tools`). Same size as -Oz here, and faster code.
fn optimize(wasm: &std::path::Path) -> anyhow::Result<()> {
    let features = ["reference-types", "bulk-memory", "nontrapping-float-to-int", "sign-ext", "multivalue", "mutable-globals"];
    let mut cmd = Command::new("node");
    cmd.arg(crate::tools::wasm_opt()).arg("-O3");
    for f in features {
        cmd.arg(format!("--enable-{f}"));
    }
    run(cmd.arg(wasm).arg("-o").arg(wasm))
}

/// Minifies every script of the package in place (ES modules: imports,
/// exports and `new URL('./x.js', import.meta.url)` stay as they are). The
/// readable sources are `pkg-config/` and wasm-bindgen's output. Script
/// names held in constants stay there and bundler hints stay in place: the
/// cross-origin spawn must not look like an asset to bundlers.
fn minify_scripts(pkg: &std::path::Path) -> anyhow::Result<()> {
    for path in scripts(pkg)? {
        let mut cmd = Command::new("node");
        cmd.arg(crate::tools::terser()).args([
            "--module",
            "--compress",
            "reduce_vars=false,collapse_vars=false",
            "--mangle",
            "--ecma",
            "2020",
            "--comments",
            "/webpackIgnore|@vite-ignore/",
            "-o",
        ]);
        run(cmd.arg(&path).arg(&path))?;
    }
    Ok(())
}

/// Writes `NAME.gz` beside the package's wasm and its larger top-level
/// scripts: the coordinator serves them to browsers that accept gzip. Not
/// beside the snippets (a few hundred bytes each, and `snippets/` is packed
/// whole by npm, which would ship the copies); package.json names the
/// top-level files, so npm leaves their `.gz` out.
fn precompress(pkg: &std::path::Path) -> anyhow::Result<()> {
    // wasm-pack leaves old files in place: a `.gz` whose file changed, shrank
    // or went away must not outlive it.
    for entry in std::fs::read_dir(pkg)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "gz") {
            std::fs::remove_file(&path)?;
        }
    }
    for entry in std::fs::read_dir(pkg)? {
        let path = entry?.path();
        let shipped = path.extension().is_some_and(|e| e == "js" || e == "wasm");
        if shipped && std::fs::metadata(&path)?.len() >= 1024 {
            run(Command::new("gzip").args(["-9", "--keep", "--force", "--no-name"]).arg(&path))?;
        }
    }
    Ok(())
}

/// Bytes of a file gzipped with `gzip -9`, as a web server or CDN would send it.
pub fn gzip_len(path: &std::path::Path) -> anyhow::Result<u64> {
    let out = Command::new("gzip").arg("-9c").arg(path).output().context("running gzip")?;
    anyhow::ensure!(out.status.success(), "gzip {} failed", path.display());
    Ok(out.stdout.len() as u64)
}

/// Gzipped bytes of the package's wasm and of all its scripts (what the page,
/// the agent and the executors load).
pub fn shipped_gzip_bytes(pkg: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    let wasm = gzip_len(&pkg.join("idlecore_wasm_bg.wasm"))?;
    let mut js = 0;
    for path in scripts(pkg)? {
        js += gzip_len(&path)?;
    }
    Ok((wasm, js))
}

/// Every script of the package, snippets included.
fn scripts(pkg: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let (mut found, mut dirs) = (vec![], vec![pkg.to_path_buf()]);
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "js") {
                found.push(path);
            }
        }
    }
    Ok(found)
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
    for name in ["mandelbrot", "hashchain", "sort", "wasi-probe", "wasi-conformance", "wasi-conformance-c", "thumbnail"] {
        modules.push((name.to_string(), std::fs::read(paths.tasks.join(format!("{name}.wasm")))?));
    }
    for (name, raw) in modules {
        let sandboxed = idlecore_coordinator::sandbox::instrument(&raw).with_context(|| format!("sandboxing {name}"))?;
        std::fs::write(dir.join(format!("{name}.wasm")), &raw)?;
        std::fs::write(dir.join(format!("{name}.sandboxed.wasm")), sandboxed)?;
    }
    Ok(())
}
