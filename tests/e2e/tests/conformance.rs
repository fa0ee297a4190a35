//! WASI conformance: the same programs under `idlecore run` (both engines:
//! the native worker's and the browser sandbox) and under wasmtime
//! (`wasmtime_run.py`, a real WASI runtime), with identical directories.
//! Transcripts, exit codes and the files left behind must be the same.

use idlecore_e2e::Paths;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn output(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The engines `idlecore run --engine` offers; each must match wasmtime.
const ENGINES: [&str; 2] = ["native", "browser"];

fn idlecore(paths: &Paths, engine: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(&paths.bin);
    cmd.args(["run", "--engine", engine]).args(args).env("IDLECORE_PKG", &paths.pkg);
    output(cmd, stdin)
}

fn wasmtime(args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("wasmtime_run.py")).args(args);
    output(cmd, stdin)
}

/// Lays out the conformance fixture: `hello.txt` and `sub/n.txt`.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/n.txt"), "42\n").unwrap();
    dir
}

/// Every file under `dir`, by relative path.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(dir).unwrap().display().to_string(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn same(module: &Path, guest: &str) {
    for engine in ENGINES {
        same_in(engine, module, guest);
    }
}

fn same_in(engine: &str, module: &Path, guest: &str) {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let (a, b) = (fixture(), fixture());
    let m = module.to_str().unwrap();
    let dir_a = format!("{}::{guest}", a.path().display());
    let dir_b = format!("{}::{guest}", b.path().display());
    let reference = wasmtime(&["--dir", &dir_a, m, guest], b"");
    let ours = idlecore(&paths, engine, &["--dir", &dir_b, m, guest], b"");
    let text = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(reference.status.success(), "wasmtime: {}", String::from_utf8_lossy(&reference.stderr));
    assert!(text(&reference).ends_with("done\n"), "the program ran to its end under wasmtime");
    let (want, got) = (text(&reference), text(&ours));
    for (w, g) in want.lines().zip(got.lines()) {
        assert_eq!(g, w, "first differing line (idlecore --engine {engine} vs wasmtime)");
    }
    assert_eq!(got, want, "{engine}");
    assert_eq!(ours.status.code(), reference.status.code(), "{engine}");
    assert_eq!(tree(b.path()), tree(a.path()), "files left behind differ ({engine})");
}

#[test]
fn rust_filesystem_program_matches_wasmtime() {
    same(&Paths::workspace().tasks.join("wasi-conformance.wasm"), "/data");
}

#[test]
fn a_working_directory_preopen_matches_wasmtime() {
    same(&Paths::workspace().tasks.join("wasi-conformance.wasm"), ".");
}

#[test]
fn a_root_preopen_matches_wasmtime() {
    // `--dir HOST::/`: the host directory is the guest's root, as in `wasmtime run`.
    same(&Paths::workspace().tasks.join("wasi-conformance-c.wasm"), "/");
    same(&Paths::workspace().tasks.join("wasi-conformance.wasm"), "/");
}

#[test]
fn c_filesystem_program_matches_wasmtime() {
    let c = Paths::workspace().tasks.join("wasi-conformance-c.wasm");
    assert!(c.exists(), "{} is built by `cargo xtask build` (clang + wasi-libc)", c.display());
    same(&c, "/data");
}

#[test]
fn stdio_args_env_and_exit_codes_match_wasmtime() {
    for engine in ENGINES {
        stdio_args_env_and_exit_codes_match_wasmtime_in(engine);
    }
}

fn stdio_args_env_and_exit_codes_match_wasmtime_in(engine: &str) {
    let paths = Paths::workspace();
    let probe = paths.tasks.join("wasi-probe.wasm");
    let p = probe.to_str().unwrap();
    let args = ["--env", "A=1", "--env", "EMPTY=", p, "report", "x y", "--z"];
    let (want, got) = (wasmtime(&args, b"stdin bytes\n"), idlecore(&paths, engine, &args, b"stdin bytes\n"));
    let first3 = |o: &Output| String::from_utf8_lossy(&o.stdout).lines().take(3).collect::<Vec<_>>().join("\n");
    assert_eq!(first3(&got), first3(&want));
    assert_eq!(got.stderr, want.stderr);
    for code in ["0", "1", "42", "125"] {
        let (w, g) = (wasmtime(&[p, "exit", code], b""), idlecore(&paths, engine, &[p, "exit", code], b""));
        assert_eq!(g.status.code(), w.status.code(), "exit {code}");
    }
    // Statuses of 126 and up are an error in both, not an exit code.
    let (w, g) = (wasmtime(&[p, "exit", "255"], b""), idlecore(&paths, engine, &[p, "exit", "255"], b""));
    assert!(String::from_utf8_lossy(&w.stderr).contains("invalid exit status"));
    assert!(String::from_utf8_lossy(&g.stderr).contains("invalid exit status 255"), "{}", String::from_utf8_lossy(&g.stderr));
    assert_ne!(g.status.code(), Some(255));
}
