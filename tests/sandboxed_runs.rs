//! Sandboxed modules (as the coordinator serves them) in the executor's
//! runner: one instance serves many runs, and every run's outcome is the one
//! a new instance would give. Runs in a dedicated Worker, like executors.

#![cfg(target_arch = "wasm32")]

use idlecore_wasi_host::WasiCtx;
use idlecore_wasm::executor::instance::{run, Prepared, RunError, RunLimits, RunOutput};
use js_sys::{Uint8Array, WebAssembly};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

macro_rules! module {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/target/sandboxed/", $name))
    };
}
const PROBE: &[u8] = module!("wasi-probe.sandboxed.wasm");
const PROBE_RAW: &[u8] = module!("wasi-probe.wasm");
const CONFORMANCE: &[u8] = module!("wasi-conformance.sandboxed.wasm");
const CONFORMANCE_C: &[u8] = module!("wasi-conformance-c.sandboxed.wasm");

const LIMITS: RunLimits = RunLimits { fuel: 0, max_memory_pages: 1024 };

fn compile(bytes: &[u8]) -> WebAssembly::Module {
    WebAssembly::Module::new(&Uint8Array::from(bytes).into()).expect("compiles")
}

fn ctx(args: &[&str], stdin: &[u8], seed: u64) -> WasiCtx {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    WasiCtx::new("probe.wasm", &args, &[("K".into(), "v".into())], stdin.to_vec(), seed, 1 << 20)
}

/// Everything a run reports, comparable.
type Outcome = Result<(i32, Vec<u8>, Vec<u8>, u64, Vec<(String, Vec<u8>)>), RunError>;

fn outcome(r: Result<RunOutput, RunError>) -> Outcome {
    r.map(|o| (o.exit_code, o.stdout, o.stderr, o.fuel_used, o.files.into_iter().map(|f| (f.path, f.data)).collect()))
}

#[wasm_bindgen_test]
fn one_instance_serves_many_runs_each_as_if_new() {
    let module = compile(PROBE);
    let prepared = Prepared::new(module.clone()).expect("checks");
    assert!(prepared.resettable(), "the coordinator makes Rust commands resettable");
    let cases: [(&[&str], &[u8], u64); 4] = [
        (&["report", "a", "b"], b"first", 1),
        (&["report"], b"", 2),
        (&["state"], b"", 3),
        (&["report", "x"], b"a longer stdin than before\n", 1),
    ];
    for round in 0..2 {
        for (args, stdin, seed) in cases {
            let reused = outcome(prepared.run(ctx(args, stdin, seed), LIMITS));
            let fresh = outcome(run(&module, ctx(args, stdin, seed), LIMITS));
            assert_eq!(reused, fresh, "round {round}, {args:?}");
            assert!(reused.as_ref().unwrap().3 > 0, "fuel is counted");
        }
    }
    assert_eq!(prepared.instances(), 1, "all eight runs used one instance");
}

#[wasm_bindgen_test]
fn state_left_by_a_run_is_gone_in_the_next() {
    let prepared = Prepared::new(compile(PROBE)).unwrap();
    let first = prepared.run(ctx(&["state"], b"", 1), LIMITS).unwrap();
    let text = String::from_utf8(first.stdout.clone()).unwrap();
    assert!(text.starts_with("runs 1 pages 17 -> "), "{text}");
    for _ in 0..3 {
        let again = prepared.run(ctx(&["state"], b"", 1), LIMITS).unwrap();
        assert_eq!(String::from_utf8(again.stdout).unwrap(), text, "statics, memory size and fuel start over");
        assert_eq!(again.fuel_used, first.fuel_used);
    }
    assert_eq!(prepared.instances(), 1);
}

#[wasm_bindgen_test]
fn failures_do_not_spoil_the_instance_for_the_next_run() {
    let module = compile(PROBE);
    let prepared = Prepared::new(module.clone()).unwrap();
    let good = || outcome(run(&module, ctx(&["report", "ok"], b"in", 5), LIMITS));
    let bad: [(&[&str], RunLimits, &str); 5] = [
        (&["trap"], LIMITS, "Trap"),
        (&["spin"], RunLimits { fuel: 200_000, ..LIMITS }, "FuelExhausted"),
        (&["flood", "2000000"], LIMITS, "OutputLimit"),
        (&["hog", "200"], RunLimits { max_memory_pages: 64, ..LIMITS }, "MemoryLimit"),
        (&["exit", "7"], LIMITS, "exit 7"),
    ];
    for (args, limits, want) in bad {
        let got = prepared.run(ctx(args, b"", 5), limits);
        let kind = match &got {
            Ok(o) => format!("exit {}", o.exit_code),
            Err(e) => format!("{e:?}"),
        };
        assert!(kind.contains(want), "{args:?}: {kind}");
        assert_eq!(outcome(prepared.run(ctx(&["report", "ok"], b"in", 5), LIMITS)), good(), "after {args:?}");
    }
    assert_eq!(prepared.instances(), 1);
}

#[wasm_bindgen_test]
fn filesystem_programs_in_rust_and_c_repeat_exactly() {
    for (name, bytes) in [("rust", CONFORMANCE), ("c", CONFORMANCE_C)] {
        let module = compile(bytes);
        let prepared = Prepared::new(module.clone()).unwrap();
        assert!(prepared.resettable(), "{name}");
        let ctx = || {
            let files = vec![("hello.txt".to_string(), b"hello\n".to_vec()), ("sub/n.txt".to_string(), b"42\n".to_vec())];
            WasiCtx::new("conformance.wasm", &["/data".to_string()], &[], vec![], 9, 1 << 20)
                .with_preopen("/data", true, files.clone())
                .unwrap()
        };
        let fresh = outcome(run(&module, ctx(), LIMITS));
        let text = String::from_utf8_lossy(&fresh.as_ref().unwrap().1).into_owned();
        assert!(text.ends_with("done\n"), "{name}: {text}");
        for _ in 0..3 {
            assert_eq!(outcome(prepared.run(ctx(), LIMITS)), fresh, "{name}");
        }
        assert_eq!(prepared.instances(), 1, "{name}");
    }
}

#[wasm_bindgen_test]
fn modules_without_the_sandbox_get_a_new_instance_each_run() {
    let prepared = Prepared::new(compile(PROBE_RAW)).unwrap();
    assert!(!prepared.resettable());
    for _ in 0..3 {
        let out = prepared.run(ctx(&["state"], b"", 1), LIMITS).unwrap();
        assert!(String::from_utf8(out.stdout).unwrap().starts_with("runs 1 "));
    }
    assert_eq!(prepared.instances(), 3);
}
