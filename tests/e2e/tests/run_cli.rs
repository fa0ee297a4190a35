//! `idlecore run`: one task in the worker's sandbox, behaving like `wasmtime
//! run`, on both engines (native and the browser), which must agree.

use idlecore_e2e::Paths;
use std::io::Write;
use std::process::{Command, Output, Stdio};

const ENGINES: [&str; 2] = ["native", "browser"];

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let native = run_on("native", args, stdin);
    let browser = run_on("browser", args, stdin);
    assert_eq!(native.status.code(), browser.status.code(), "the engines agree on the status of {args:?}");
    assert_eq!(native.stdout, browser.stdout, "the engines agree on the output of {args:?}");
    native
}

fn run_on(engine: &str, args: &[&str], stdin: &[u8]) -> Output {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let mut child = Command::new(&paths.bin)
        .args(["run", "--engine", engine])
        .args(args)
        .env("IDLECORE_PKG", &paths.pkg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn probe() -> String {
    Paths::workspace().tasks.join("wasi-probe.wasm").display().to_string()
}

#[test]
fn stdin_args_and_env_go_in_stdout_stderr_and_exit_code_come_out() {
    let p = probe();
    let out = run(&["--env", "A=1", "--env", "B=two words", &p, "report", "x", "--flag"], b"from stdin");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "args: x --flag");
    assert_eq!(lines[1], "env: A=1 B=two words");
    assert_eq!(lines[2], "stdin: from stdin");
    assert_eq!(out.stderr, b"stderr-line\n");
    // Seeded clocks and random numbers: a second run prints the same bytes.
    let again = run(&["--env", "A=1", "--env", "B=two words", &p, "report", "x", "--flag"], b"from stdin");
    assert_eq!(again.stdout, out.stdout);
    for engine in ENGINES {
        let real = run_on(engine, &["--real-clocks", &p, "report"], b"");
        let real2 = run_on(engine, &["--real-clocks", &p, "report"], b"");
        assert_ne!(real.stdout, real2.stdout, "--real-clocks gives real entropy ({engine})");
    }

    let exit = run(&[&p, "exit", "7"], b"");
    assert_eq!(exit.status.code(), Some(7));
}

#[test]
fn failures_and_limits_are_reported_with_their_kind() {
    for engine in ENGINES {
        failures_and_limits_are_reported_with_their_kind_on(engine);
    }
}

fn failures_and_limits_are_reported_with_their_kind_on(engine: &str) {
    let run = |args: &[&str], stdin: &[u8]| run_on(engine, args, stdin);
    let p = probe();
    let trap = run(&[&p, "trap"], b"");
    assert_eq!(trap.status.code(), Some(134));
    // The trap in the same words on both engines.
    let said = String::from_utf8_lossy(&trap.stderr);
    assert!(said.contains("the task failed: trap: RuntimeError: unreachable"), "{engine}: {said}");
    let fuel = run(&["--fuel", "100000", &p, "spin"], b"");
    assert_eq!(fuel.status.code(), Some(134));
    assert!(String::from_utf8_lossy(&fuel.stderr).contains("fuel_exhausted: ran out of fuel after 100000 instructions"));
    let slow = run(&["--timeout", "1", &p, "spin"], b"");
    assert!(String::from_utf8_lossy(&slow.stderr).contains("timeout: "));
    let memory = run(&["--memory", "8", &p, "hog", "32"], b"");
    assert!(String::from_utf8_lossy(&memory.stderr).contains("memory_limit: "));
}

#[test]
fn bad_invocations_say_what_is_wrong() {
    for engine in ENGINES {
        bad_invocations_say_what_is_wrong_on(engine);
    }
}

fn bad_invocations_say_what_is_wrong_on(engine: &str) {
    let run = |args: &[&str], stdin: &[u8]| run_on(engine, args, stdin);
    let p = probe();
    let dir = run(&["--dir", "/nonexistent-dir::/data", &p, "report"], b"");
    assert_eq!(dir.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dir.stderr).contains("/nonexistent-dir is not a directory"));
    let big = tempfile::tempdir().unwrap();
    std::fs::write(big.path().join("huge.bin"), vec![0u8; 20 << 20]).unwrap();
    let too_big = run(&["--dir", &format!("{}::/data", big.path().display()), &p, "report"], b"");
    assert_eq!(too_big.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_big.stderr).contains("more than"), "{}", String::from_utf8_lossy(&too_big.stderr));
    let missing = run(&["/nonexistent/task.wasm"], b"");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("reading /nonexistent/task.wasm"));
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0\x01").unwrap();
    let refused = run(&[garbage.to_str().unwrap()], b"");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a valid WebAssembly module"));
}
