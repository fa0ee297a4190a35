//! The engine on modules sandboxed as the coordinator sandboxes them: a kept
//! instance starts each run as a new one would, a run can be stopped from
//! another thread, the memory cap and fuel hold, and every preview1 import
//! links.

use idlecore_native_engine::engine::{runtime, Executor, RunError, RunLimits};
use idlecore_native_engine::host::Stop;
use idlecore_protocol::Sha256Hash;
use idlecore_wasi_host::{WasiCtx, PREVIEW1};
use std::time::{Duration, Instant};

fn sandboxed(wat: &str) -> (Sha256Hash, Vec<u8>) {
    let wasm = idlecore_coordinator::sandbox::instrument(&wat::parse_str(wat).unwrap()).unwrap();
    (Sha256Hash::of(&wasm), wasm)
}

fn ctx() -> WasiCtx {
    WasiCtx::new("task.wasm", &[], &[], Vec::new(), 1, 1 << 20)
}

const LIMITS: RunLimits = RunLimits { fuel: 0, max_memory_pages: 16 };

/// Prints the byte at address 100, then adds one to it and to a global:
/// a kept instance that was not reset would print 1 the second time.
const COUNTER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 48))
  (data (i32.const 100) "0")
  (func (export "_start")
    (i32.store8 (i32.const 101) (global.get $g))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store8 (i32.const 100) (i32.add (i32.load8_u (i32.const 100)) (i32.const 1)))
    (global.set $g (i32.add (global.get $g) (i32.const 1)))))"#;

#[test]
fn a_kept_instance_starts_every_run_as_a_new_one() {
    let (hash, wasm) = sandboxed(COUNTER);
    let module = runtime().compile(hash, &wasm).unwrap();
    let mut executor = Executor::default();
    for _ in 0..3 {
        let out = executor.run(&module, ctx(), LIMITS, &Stop::default()).unwrap();
        assert_eq!(out.stdout, b"00", "memory and globals as the module starts them");
        assert!(out.fuel_used > 0);
    }
    assert_eq!(executor.instances(), 1, "one instance served every run");
}

#[test]
fn a_run_is_stopped_from_another_thread() {
    let (hash, wasm) = sandboxed(r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#);
    let module = runtime().compile(hash, &wasm).unwrap();
    let stop = Stop::default();
    let cancel = stop.cancel.clone();
    let started = Instant::now();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let run = Executor::default().run(&module, ctx(), LIMITS, &stop);
    stopper.join().unwrap();
    assert!(matches!(&run, Err(RunError::Trap(m)) if m.contains("interrupted")), "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "stopped within a few ticks ({:?})", started.elapsed());
    // A deadline stops it too.
    let deadline = Stop { deadline: Some(Instant::now() + Duration::from_millis(100)), ..Stop::default() };
    assert!(Executor::default().run(&module, ctx(), LIMITS, &deadline).is_err());
}

#[test]
fn fuel_and_the_memory_cap_hold() {
    let (hash, wasm) = sandboxed(r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#);
    let module = runtime().compile(hash, &wasm).unwrap();
    let run = Executor::default().run(&module, ctx(), RunLimits { fuel: 10_000, max_memory_pages: 16 }, &Stop::default());
    assert_eq!(run, Err(RunError::FuelExhausted(10_000)));

    let grow = r#"(module (memory (export "memory") 1)
      (func (export "_start") (if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then unreachable))))"#;
    let (hash, wasm) = sandboxed(grow);
    let module = runtime().compile(hash, &wasm).unwrap();
    let run = Executor::default().run(&module, ctx(), LIMITS, &Stop::default());
    assert!(matches!(&run, Err(RunError::MemoryLimit(m)) if m.contains("cap of 16 pages")), "{run:?}");
    assert!(Executor::default().run(&module, ctx(), RunLimits { fuel: 0, max_memory_pages: 100 }, &Stop::default()).is_ok());

    let (hash, wasm) = sandboxed(r#"(module (memory (export "memory") 32) (func (export "_start")))"#);
    let module = runtime().compile(hash, &wasm).unwrap();
    let run = Executor::default().run(&module, ctx(), LIMITS, &Stop::default());
    assert!(matches!(&run, Err(RunError::MemoryLimit(_))), "a module starting past the cap: {run:?}");
}

#[test]
fn every_preview1_import_links_and_others_are_refused() {
    // Each import with the signature wasi-libc declares (all i32 but the
    // i64 offsets, rights, cookies and timestamps).
    let i64_params: &[(&str, &[usize])] = &[
        ("clock_time_get", &[1]),
        ("fd_advise", &[1, 2]),
        ("fd_allocate", &[1, 2]),
        ("fd_fdstat_set_rights", &[1, 2]),
        ("fd_filestat_set_size", &[1]),
        ("fd_filestat_set_times", &[1, 2]),
        ("fd_pread", &[3]),
        ("fd_pwrite", &[3]),
        ("fd_readdir", &[3]),
        ("fd_seek", &[1]),
        ("path_filestat_set_times", &[4, 5]),
        ("path_open", &[5, 6]),
    ];
    let arity = |name: &str| match name {
        "sched_yield" => 0,
        "fd_close" | "fd_datasync" | "fd_sync" | "proc_exit" | "proc_raise" => 1,
        "args_get"
        | "args_sizes_get"
        | "environ_get"
        | "environ_sizes_get"
        | "clock_res_get"
        | "fd_fdstat_get"
        | "fd_fdstat_set_flags"
        | "fd_filestat_get"
        | "fd_prestat_get"
        | "fd_renumber"
        | "fd_tell"
        | "random_get"
        | "sock_shutdown"
        | "fd_filestat_set_size" => 2,
        "clock_time_get"
        | "fd_prestat_dir_name"
        | "path_create_directory"
        | "path_remove_directory"
        | "path_unlink_file"
        | "fd_allocate"
        | "fd_fdstat_set_rights"
        | "sock_accept" => 3,
        "fd_advise" | "fd_filestat_set_times" | "fd_read" | "fd_write" | "fd_seek" | "poll_oneoff" => 4,
        "fd_pread" | "fd_pwrite" | "fd_readdir" | "path_filestat_get" | "path_symlink" | "sock_send" => 5,
        "path_readlink" | "path_rename" | "sock_recv" => 6,
        "path_filestat_set_times" | "path_link" => 7,
        "path_open" => 9,
        other => panic!("no arity for {other}"),
    };
    let imports: String = PREVIEW1
        .iter()
        .map(|name| {
            let wide = i64_params.iter().find(|(n, _)| n == name).map_or(&[][..], |(_, i)| i);
            let params: Vec<&str> = (0..arity(name)).map(|i| if wide.contains(&i) { "i64" } else { "i32" }).collect();
            let result = if *name == "proc_exit" { "" } else { "(result i32)" };
            format!(r#"(import "wasi_snapshot_preview1" "{name}" (func (param {}) {result}))"#, params.join(" "))
        })
        .collect();
    let wat = format!(r#"(module {imports} (memory (export "memory") 1) (func (export "_start")))"#);
    let (hash, wasm) = sandboxed(&wat);
    let module = runtime().compile(hash, &wasm).unwrap();
    Executor::default().run(&module, ctx(), LIMITS, &Stop::default()).expect("every preview1 import links");

    let other = r#"(module (import "env" "f" (func)) (memory (export "memory") 1) (func (export "_start")))"#;
    let (hash, wasm) = sandboxed(other);
    let refused = runtime().compile(hash, &wasm).unwrap_err();
    assert!(refused.contains("imports function `env.f`"), "{refused}");
}
