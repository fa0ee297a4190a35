//! The WASI host and the executor's job runner, in a dedicated Worker (where
//! they run in production), on the `wasi-probe` test task.
//! `cargo xtask test` builds the task before these run.

#![cfg(target_arch = "wasm32")]

use idlecore_protocol::{BlobTarget, FailureKind, InputBlob, Lease, TaskDir, TaskFile, TaskLimits, WorkerMessage};
use idlecore_wasi_host::WasiCtx;
use idlecore_wasm::executor::instance::{check_module, run as run_limited, RunError, RunLimits};
use idlecore_wasm::executor::worker::run_job;
use js_sys::{Uint8Array, WebAssembly};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const PROBE: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/target/wasm32-wasip1/release/wasi-probe.wasm"));

/// Runs without fuel and with a generous memory cap.
fn run(module: &WebAssembly::Module, ctx: WasiCtx) -> Result<idlecore_wasm::executor::instance::RunOutput, RunError> {
    run_limited(module, ctx, RunLimits { fuel: 0, max_memory_pages: 16384 })
}

fn compile(bytes: &[u8]) -> Result<WebAssembly::Module, wasm_bindgen::JsValue> {
    WebAssembly::Module::new(&Uint8Array::from(bytes).into())
}

fn probe() -> WebAssembly::Module {
    compile(PROBE).expect("the probe compiles")
}

fn ctx(args: &[&str], stdin: &[u8], seed: u64, max_output: u32) -> WasiCtx {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    WasiCtx::new("probe.wasm", &args, &[("B".into(), "2".into()), ("A".into(), "1".into())], stdin.to_vec(), seed, max_output)
}

#[wasm_bindgen_test]
fn args_env_stdin_stdout_and_stderr_reach_the_task() {
    let out = run(&probe(), ctx(&["report", "x", "y z"], b"input bytes", 1, 1 << 20)).unwrap();
    assert_eq!(out.exit_code, 0);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "args: x y z");
    assert_eq!(lines[1], "env: A=1 B=2");
    assert_eq!(lines[2], "stdin: input bytes");
    assert!(lines[3].starts_with("random: ") && lines[3].len() == "random: ".len() + 16);
    assert_eq!(lines[4], "clock advances: true");
    assert_eq!(out.stderr, b"stderr-line\n");
}

#[wasm_bindgen_test]
fn runs_with_the_same_seed_are_identical() {
    let a = run(&probe(), ctx(&["report"], b"", 7, 1 << 20)).unwrap().stdout;
    let b = run(&probe(), ctx(&["report"], b"", 7, 1 << 20)).unwrap().stdout;
    let c = run(&probe(), ctx(&["report"], b"", 8, 1 << 20)).unwrap().stdout;
    assert_eq!(a, b);
    assert_ne!(a, c, "another seed gives other random bytes");
}

#[wasm_bindgen_test]
fn jobs_may_opt_into_real_clocks_and_entropy() {
    use idlecore_wasm::executor::js_host::host_sources;
    let real = || {
        let (clocks, random) = host_sources();
        run(&probe(), ctx(&["report"], b"", 7, 1 << 20).with_clocks(clocks).with_random(random)).unwrap().stdout
    };
    let (a, b) = (real(), real());
    let random = |out: &[u8]| String::from_utf8_lossy(out).lines().find(|l| l.starts_with("random:")).unwrap().to_string();
    assert_ne!(random(&a), random(&b), "crypto.getRandomValues differs run to run");
    let seeded = run(&probe(), ctx(&["report"], b"", 7, 1 << 20)).unwrap().stdout;
    assert_ne!(random(&a), random(&seeded));
}

#[wasm_bindgen_test]
fn exit_codes_are_reported() {
    assert_eq!(run(&probe(), ctx(&["exit", "7"], b"", 1, 1024)).unwrap().exit_code, 7);
    assert_eq!(run(&probe(), ctx(&["bogus"], b"", 1, 1024)).unwrap().exit_code, 2);
}

#[wasm_bindgen_test]
fn traps_and_stack_overflows_are_failures_not_crashes() {
    match run(&probe(), ctx(&["trap"], b"", 1, 1024)) {
        Err(RunError::Trap(m)) => assert!(m.contains("unreachable"), "{m}"),
        other => panic!("expected a trap, got {:?}", other.map(|o| o.exit_code)),
    }
    match run(&probe(), ctx(&["recurse"], b"", 1, 1024)) {
        Err(RunError::Trap(m)) => assert!(m.to_lowercase().contains("stack"), "{m}"),
        other => panic!("expected a stack overflow, got {:?}", other.map(|o| o.exit_code)),
    }
    // The same thread goes on running tasks.
    assert_eq!(run(&probe(), ctx(&["exit", "0"], b"", 1, 1024)).unwrap().exit_code, 0);
}

#[wasm_bindgen_test]
fn output_past_the_limit_stops_the_task() {
    assert_eq!(run(&probe(), ctx(&["flood", "100000"], b"", 1, 50_000)).err(), Some(RunError::OutputLimit(50_000)));
    let out = run(&probe(), ctx(&["flood", "40000"], b"", 1, 50_000)).unwrap();
    assert_eq!(out.stdout.len(), 40_000);
}

/// `(module (import "env" "f" (func)))` followed by the probe's required exports is
/// not needed: the import alone must be refused before instantiation.
const FOREIGN_IMPORT: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x02, 0x09, 0x01, 0x03, b'e', b'n', b'v', 0x01, b'f', 0x00, 0x00, // import env.f
];

#[wasm_bindgen_test]
fn modules_importing_anything_else_are_refused() {
    let m = compile(FOREIGN_IMPORT).unwrap();
    let err = check_module(&m).unwrap_err();
    assert!(err.contains("`env.f`"), "{err}");
    assert!(matches!(run(&m, ctx(&[], b"", 1, 1024)), Err(RunError::Invalid(_))));
    // A module with no _start is not a command.
    let empty = compile(b"\0asm\x01\0\0\0").unwrap();
    assert!(check_module(&empty).unwrap_err().contains("_start"));
}

#[wasm_bindgen_test]
fn a_module_starting_above_the_memory_cap_is_refused() {
    // The probe starts with more than one page (Rust's stack and data).
    match run_limited(&probe(), ctx(&["exit", "0"], b"", 1, 1024), RunLimits { fuel: 0, max_memory_pages: 1 }) {
        Err(RunError::MemoryLimit(m)) => assert!(m.contains("cap is 1 pages"), "{m}"),
        other => panic!("expected a memory limit, got {:?}", other.map(|o| o.exit_code)),
    }
}

#[wasm_bindgen_test]
fn invalid_bytes_do_not_compile() {
    assert!(compile(b"\0asm\x01\0\0\0\x01\xff").is_err());
    assert!(compile(b"not wasm at all").is_err());
}

#[wasm_bindgen_test]
fn the_executor_reports_results_and_failures_as_protocol_messages() {
    let limits = TaskLimits { timeout_ms: 10_000, max_output_bytes: 1 << 20, max_memory_pages: 1024, fuel: 0 };
    let job = |lease, args: &[&str]| Lease {
        lease,
        job: 1,
        task: 2,
        module: idlecore_protocol::Sha256Hash([0; 32]),
        stdin: b"abc".to_vec(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        seed: 3,
        deterministic: true,
        dirs: vec![],
        limits,
        blobs: vec![],
    };
    match run_job(probe(), &job(11, &["report"]), vec![]) {
        WorkerMessage::Result(r) => {
            assert_eq!(r.lease, 11);
            assert!(String::from_utf8(r.stdout).unwrap().contains("stdin: abc"));
        }
        other => panic!("expected a result, got {other:?}"),
    }
    match run_job(probe(), &job(12, &["trap"]), vec![]) {
        WorkerMessage::Failure(f) => assert_eq!((f.lease, f.kind), (12, FailureKind::Trap)),
        other => panic!("expected a failure, got {other:?}"),
    }

    // Input blobs go where the lease says: stdin, or a file of one of its dirs.
    let blob = |bytes: &[u8], target| InputBlob { hash: idlecore_protocol::Sha256Hash([9; 32]), size: bytes.len() as u64, target };
    let stdin_blob = Lease { stdin: vec![], blobs: vec![blob(b"from a blob", BlobTarget::Stdin)], ..job(13, &["report"]) };
    match run_job(probe(), &stdin_blob, vec![b"from a blob".to_vec()]) {
        WorkerMessage::Result(r) => assert!(String::from_utf8(r.stdout).unwrap().contains("stdin: from a blob\n")),
        other => panic!("expected a result, got {other:?}"),
    }
    let dirs = vec![
        TaskDir { guest: "/input".into(), writable: false, files: vec![] },
        TaskDir { guest: "/output".into(), writable: true, files: vec![] },
    ];
    let in_txt = BlobTarget::File { dir: 0, path: "in.txt".into() };
    let file_blob = Lease { dirs, blobs: vec![blob(b"big input", in_txt)], ..job(14, &["copy"]) };
    match run_job(probe(), &file_blob, vec![b"big input".to_vec()]) {
        WorkerMessage::Result(r) => {
            assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
            assert_eq!(r.files, vec![TaskFile { path: "/output/sub/out.txt".into(), data: b"BIG INPUT".to_vec() }]);
        }
        other => panic!("expected a result, got {other:?}"),
    }
    // Bytes that do not match the lease's sizes are not run.
    match run_job(probe(), &file_blob, vec![b"other".to_vec()]) {
        WorkerMessage::Failure(f) => assert_eq!(f.kind, FailureKind::Internal),
        other => panic!("expected a failure, got {other:?}"),
    }
    match run_job(probe(), &file_blob, vec![]) {
        WorkerMessage::Failure(f) => assert_eq!(f.kind, FailureKind::Internal),
        other => panic!("expected a failure, got {other:?}"),
    }
}
