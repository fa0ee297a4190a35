//! Comparators written in WAT, run by the real host: the file interface,
//! verdicts, and hostile modules.

use super::*;
use crate::domain::model::{FileMap, TaskStatus};

fn output(stdout: &str, exit: i32) -> ResultRecord {
    ResultRecord {
        task: 0,
        status: TaskStatus::Done,
        exit_code: Some(exit),
        stdout: stdout.as_bytes().to_vec(),
        stderr: vec![],
        elapsed_ms: 1,
        fuel_used: 1,
        files: FileMap::default(),
        error: None,
    }
}

fn comparator(wat: &str) -> Comparator {
    Comparator::new(&wat::parse_str(wat).unwrap()).unwrap()
}

/// A command whose `_start` is `body`, importing proc_exit as `$exit`.
fn command(body: &str) -> String {
    format!(
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_allocate" (func $allocate (param i32 i64 i64) (result i32)))
          (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start") {body}))"#
    )
}

/// Agrees when `<dir>/<file>` of both outputs are equal ignoring ASCII case
/// (files read through path_open and fd_read, up to 256 bytes each).
fn case_insensitive(file: &str) -> String {
    let len = file.len();
    format!(
        r#"(module
          (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (data (i32.const 0) "{file}")
          (func $slurp (param $dir i32) (param $buf i32) (result i32)
            (if (call $open (local.get $dir) (i32.const 0) (i32.const 0) (i32.const {len}) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 512))
              (then (return (i32.const -1))))
            (i32.store (i32.const 520) (local.get $buf))
            (i32.store (i32.const 524) (i32.const 256))
            (if (call $read (i32.load (i32.const 512)) (i32.const 520) (i32.const 1) (i32.const 528))
              (then (return (i32.const -1))))
            (i32.load (i32.const 528)))
          (func (export "_start") (local $la i32) (local $i i32)
            (local.set $la (call $slurp (i32.const 3) (i32.const 1024)))
            (if (i32.lt_s (local.get $la) (i32.const 0)) (then (call $exit (i32.const 2))))
            (if (i32.ne (local.get $la) (call $slurp (i32.const 4) (i32.const 2048))) (then (call $exit (i32.const 1))))
            (block $done (loop $next
              (br_if $done (i32.ge_u (local.get $i) (local.get $la)))
              (if (i32.ne (i32.or (i32.load8_u offset=1024 (local.get $i)) (i32.const 32))
                          (i32.or (i32.load8_u offset=2048 (local.get $i)) (i32.const 32)))
                (then (call $exit (i32.const 1))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $next)))
            (call $exit (i32.const 0))))"#
    )
}

#[test]
fn a_comparator_reads_both_outputs_and_decides() {
    let c = comparator(&case_insensitive("stdout"));
    assert_eq!(c.agree(&output("Hello", 0), &output("hELLO", 0)), Ok(true));
    assert_eq!(c.agree(&output("Hello", 0), &output("Help!", 0)), Ok(false));
    assert_eq!(c.agree(&output("Hello", 0), &output("Hello!", 0)), Ok(false));
    // The exit code is a file too.
    let exit = comparator(&case_insensitive("exit"));
    assert_eq!(exit.agree(&output("a", 3), &output("b", 3)), Ok(true));
    assert_eq!(exit.agree(&output("a", 3), &output("a", 4)), Ok(false));
    // And each output file, under files/ by its guest path.
    let mut a = output("", 0);
    a.files.0.insert("/output/x.txt".into(), b"ABC".to_vec());
    let mut b = output("", 0);
    b.files.0.insert("/output/x.txt".into(), b"abc".to_vec());
    let files = comparator(&case_insensitive("files/output/x.txt"));
    assert_eq!(files.agree(&a, &b), Ok(true));
    assert_eq!(files.agree(&a, &output("", 0)), Ok(false), "missing in b");
    assert_eq!(
        files.agree(&output("", 0), &a),
        Err(CompareError::Exit { code: 2, stderr: String::new() }),
        "missing in a: the comparator says it cannot tell"
    );
    // Each comparison starts afresh: the first verdict leaves nothing behind.
    assert_eq!(c.agree(&output("x", 0), &output("X", 0)), Ok(true));
}

#[test]
fn verdicts_are_exit_codes_and_anything_else_is_an_error() {
    assert_eq!(comparator(&command("")).agree(&output("a", 0), &output("b", 0)), Ok(true), "returning is exit 0");
    assert_eq!(comparator(&command("(call $exit (i32.const 1))")).agree(&output("a", 0), &output("a", 0)), Ok(false));
    let seven = comparator(&command(
        r#"(i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 4))
           (i32.store (i32.const 100) (i32.const 0x21656562))
           (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
           (call $exit (i32.const 7))"#,
    ));
    assert_eq!(seven.agree(&output("a", 0), &output("a", 0)), Err(CompareError::Exit { code: 7, stderr: "bee!".into() }));
    let trap = comparator(&command("unreachable")).agree(&output("a", 0), &output("a", 0));
    assert!(matches!(trap, Err(CompareError::Trap(_))), "{trap:?}");
    // A preview1 call this host does not offer returns ENOSYS (52).
    let nosys = comparator(&command("(call $exit (call $allocate (i32.const 3) (i64.const 0) (i64.const 1)))"));
    assert!(matches!(nosys.agree(&output("a", 0), &output("a", 0)), Err(CompareError::Exit { code: 52, .. })));
    // Socket calls answer as wasmtime's do: an open descriptor is no socket
    // (ENOTSOCK, 57), any other is EBADF (8).
    for (fd, errno) in [(3, 57), (99, 8)] {
        let sock = comparator(&command(&format!("(call $exit (call $accept (i32.const {fd}) (i32.const 0) (i32.const 0)))")));
        assert!(matches!(sock.agree(&output("a", 0), &output("a", 0)), Err(CompareError::Exit { code, .. }) if code == errno), "fd {fd}");
    }
}

#[test]
fn hostile_comparators_are_stopped() {
    let spin = comparator(&command("(loop $l (drop (i32.add (i32.const 1) (i32.const 2))) (br $l))")).with_limits(1_000_001, DEADLINE);
    assert_eq!(spin.agree(&output("a", 0), &output("a", 0)), Err(CompareError::OutOfFuel));
    // Host calls cost little fuel, whatever they move: the deadline stops those.
    let random = comparator(&command(
        r#"(drop (memory.grow (i32.const 255)))
           (loop $l (drop (call $random (i32.const 0) (i32.const 16000000))) (br $l))"#,
    ))
    .with_limits(FUEL, std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(random.agree(&output("a", 0), &output("a", 0)), Err(CompareError::Timeout));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    let flood = comparator(&command(
        r#"(i32.store (i32.const 0) (i32.const 0)) (i32.store (i32.const 4) (i32.const 4096))
           (loop $l (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))"#,
    ));
    assert_eq!(flood.agree(&output("a", 0), &output("a", 0)), Err(CompareError::OutputLimit));
    // Growing past the memory limit fails (memory.grow gives -1); it does not abort the host.
    let pages = MEMORY_BYTES / 65536;
    let greedy =
        comparator(&command(&format!("(if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then (call $exit (i32.const 1))))")));
    assert_eq!(greedy.agree(&output("a", 0), &output("a", 0)), Ok(false), "grown to {pages} more pages");
}

#[test]
fn modules_that_are_not_comparators_are_refused() {
    let refused = |wat: &str| Comparator::new(&wat::parse_str(wat).unwrap()).err().unwrap_or_else(|| panic!("accepted: {wat}"));
    assert!(Comparator::new(b"not wasm").err().unwrap().contains("not a valid module"));
    assert!(refused(r#"(module (memory (export "memory") 1))"#).contains("_start"));
    assert!(refused(r#"(module (func (export "_start")))"#).contains("memory"));
    let env = r#"(module (import "env" "f" (func)) (memory (export "memory") 1) (func (export "_start")))"#;
    assert!(refused(env).contains("env.f"));
    // Imports whose signature preview1 does not have, defined by this host or not.
    let wat = |import: &str| {
        format!(r#"(module (import "wasi_snapshot_preview1" {import}) (memory (export "memory") 1) (func (export "_start")))"#)
    };
    for import in [
        r#""fd_close" (func (param i32))"#,
        r#""fd_write" (func (param i32) (result i32))"#,
        r#""proc_exit" (func (param i64))"#,
        r#""sock_send" (func (result i64))"#,
    ] {
        assert!(refused(&wat(import)).contains("cannot be linked"), "{import}: {}", refused(&wat(import)));
    }
    // A table wasmi would fill at each instantiation, past the limit.
    let table = r#"(module (table 5000000 funcref) (memory (export "memory") 1) (func (export "_start")))"#;
    assert!(refused(table).contains("cannot be linked"), "{}", refused(table));
    // A start function does not run when the module is checked.
    let start = r#"(module (memory (export "memory") 1) (func $s (loop $l (br $l))) (start $s) (func (export "_start")))"#;
    assert!(Comparator::new(&wat::parse_str(start).unwrap()).is_ok());
}
