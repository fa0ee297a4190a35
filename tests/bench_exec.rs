//! Execution benchmarks, in a dedicated Worker (where executors run). Under
//! `cargo xtask test` they run a few iterations as a smoke test and check their
//! outputs; `cargo xtask bench` builds them in release with more iterations
//! (`IDLECORE_BENCH_ITERS`) and records the `BENCH` lines they print.

#![cfg(target_arch = "wasm32")]

use idlecore_wasi_host::WasiCtx;
use idlecore_wasm::executor::instance::{Prepared, RunLimits};
use js_sys::{Array, Function, Object, Reflect, Uint8Array, WebAssembly};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const ITERS: &str = match option_env!("IDLECORE_BENCH_ITERS") {
    Some(v) => v,
    None => "3",
};

macro_rules! bench_module {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/target/sandboxed/", $name))
    };
}
const EMPTY: &[u8] = bench_module!("empty.wasm");
const EMPTY_SANDBOXED: &[u8] = bench_module!("empty.sandboxed.wasm");
const MANDELBROT: &[u8] = bench_module!("mandelbrot.wasm");
const MANDELBROT_SANDBOXED: &[u8] = bench_module!("mandelbrot.sandboxed.wasm");
const HASHCHAIN: &[u8] = bench_module!("hashchain.wasm");
const HASHCHAIN_SANDBOXED: &[u8] = bench_module!("hashchain.sandboxed.wasm");
const SORT: &[u8] = bench_module!("sort.wasm");
const SORT_SANDBOXED: &[u8] = bench_module!("sort.sandboxed.wasm");

/// The workloads `cargo xtask bench` also runs natively and in wasmtime
/// (`xtask/src/bench/exec.rs` has the same arguments).
const TILE_ARGS: [&str; 6] = ["--tiles", "8", "--size", "64", "--iter", "2000"];
const TILE_STDIN: &[u8] = b"3 4\n";
const CHAIN_ARGS: [&str; 2] = ["--rounds", "20000"];
const CHAIN_STDIN: &[u8] = b"idlecore\n";
const BULK_ARGS: [&str; 4] = ["--bulk-mib", "64", "--rounds", "0"];
const SORT_ARGS: [&str; 2] = ["--n", "1000000"];
const SORT_STDIN: &[u8] = b"idlecore\n";

fn iters() -> u32 {
    ITERS.parse().unwrap_or(3).max(1)
}

fn compile(bytes: &[u8]) -> WebAssembly::Module {
    WebAssembly::Module::new(&Uint8Array::from(bytes).into()).expect("bench module compiles")
}

fn now_ms() -> f64 {
    js_sys::global().unchecked_into::<web_sys::WorkerGlobalScope>().performance().expect("performance").now()
}

/// Mean milliseconds per call of `f` over `n` calls, after one warm-up call.
fn mean_ms(n: u32, mut f: impl FnMut()) -> f64 {
    f();
    let start = now_ms();
    for _ in 0..n {
        f();
    }
    (now_ms() - start) / n as f64
}

/// Means of `a` and `b` over `n` calls each, alternating in `blocks` so that
/// noise from other processes falls on both alike.
fn paired_ms(n: u32, blocks: u32, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let per = (n / blocks).max(1);
    let (mut ta, mut tb) = (0.0, 0.0);
    for _ in 0..blocks {
        ta += mean_ms(per, &mut a);
        tb += mean_ms(per, &mut b);
    }
    (ta / blocks as f64, tb / blocks as f64)
}

/// One `BENCH` line; `key` is how `cargo xtask bench` finds the row.
fn report(key: &str, name: &str, unit: &str, value: f64, baseline_name: &str, baseline: f64, runs: u32) {
    console_log!(
        "BENCH {{\"key\":\"{key}\",\"name\":\"{name}\",\"unit\":\"{unit}\",\"value\":{value},\"baseline_name\":\"{baseline_name}\",\"baseline\":{baseline},\"runs\":{runs}}}"
    );
}

const LIMITS: RunLimits = RunLimits { fuel: 0, max_memory_pages: 16384 };

#[wasm_bindgen::prelude::wasm_bindgen(module = "/tests/js/bare_wasi.js")]
extern "C" {
    /// Runs a module in a new instance with a minimal JS WASI shim; returns stdout.
    fn bare_run(module: &WebAssembly::Module, args: Array, stdin: &Uint8Array) -> Vec<u8>;
}

/// A task as both hosts take it.
struct Workload {
    program: &'static str,
    args: &'static [&'static str],
    stdin: &'static [u8],
}

impl Workload {
    fn ctx(&self) -> WasiCtx {
        let args: Vec<String> = self.args.iter().map(|s| s.to_string()).collect();
        WasiCtx::new(self.program, &args, &[], self.stdin.to_vec(), 1, 1 << 20)
    }
    fn js_args(&self) -> Array {
        std::iter::once(self.program).chain(self.args.iter().copied()).map(JsValue::from).collect()
    }
    fn run(&self, prepared: &Prepared) -> Vec<u8> {
        let out = prepared.run(self.ctx(), LIMITS).expect("runs");
        assert_eq!(out.exit_code, 0);
        out.stdout
    }
}

#[wasm_bindgen_test]
fn fixed_cost_per_task_of_an_empty_module() {
    let (raw, sandboxed) = (compile(EMPTY), compile(EMPTY_SANDBOXED));
    // As the executor runs it: checked once, one instance reset between runs.
    let prepared = Prepared::new(sandboxed).expect("checks");
    let imports = Object::new();
    let (idlecore, bare) = paired_ms(
        iters() * 100,
        5,
        || {
            let out = prepared.run(WasiCtx::new("empty.wasm", &[], &[], vec![], 1, 1024), LIMITS).expect("runs");
            assert_eq!(out.exit_code, 0);
        },
        || {
            let instance = WebAssembly::Instance::new(&raw, &imports).expect("instantiates");
            let start: Function = Reflect::get(&instance.exports(), &JsValue::from_str("_start")).unwrap().unchecked_into();
            start.call0(&JsValue::UNDEFINED).expect("runs");
        },
    );
    report(
        "fixed_empty",
        "fixed cost per task, empty module (executor runner: reset, WASI setup, limits, result)",
        "µs",
        idlecore * 1000.0,
        "bare new instance + _start, no imports",
        bare * 1000.0,
        iters() * 100,
    );
}

/// The fixed cost of a real program: the Mandelbrot task (80 KB, Rust std)
/// asked for a 1-pixel tile, so nearly all of its run is start-up, argument
/// and stdin parsing, and output.
#[wasm_bindgen_test]
fn fixed_cost_per_task_of_a_rust_command() {
    let tiny = Workload { program: "mandelbrot.wasm", args: &["--size", "1", "--iter", "1"], stdin: b"0 0\n" };
    let (raw, sandboxed) = (compile(MANDELBROT), compile(MANDELBROT_SANDBOXED));
    let prepared = Prepared::new(sandboxed).expect("checks");
    let (args, stdin) = (tiny.js_args(), Uint8Array::from(tiny.stdin));
    let ours = tiny.run(&prepared);
    assert_eq!(bare_run(&raw, args.clone(), &stdin), ours, "both hosts print the same tile");
    assert!(ours.starts_with(b"P6\n1 1\n255\n"));
    let n = iters() * 50;
    let (idlecore, bare) = paired_ms(
        n,
        5,
        || {
            tiny.run(&prepared);
        },
        || {
            bare_run(&raw, args.clone(), &stdin);
        },
    );
    report(
        "fixed_rust",
        "fixed cost per task, Rust command printing a 1-pixel tile (executor runner, sandboxed)",
        "µs",
        idlecore * 1000.0,
        "same module unsandboxed, new instance + minimal JS WASI shim",
        bare * 1000.0,
        n,
    );
}

/// A CPU-bound workload three ways: sandboxed in idlecore's runner, the
/// same runner without the fuel meter, and bare (unsandboxed module, new
/// instance, minimal JS shim). Outputs must agree.
fn cpu_bound(key: &str, what: &str, w: &Workload, raw: &[u8], sandboxed: &[u8]) {
    let (raw, sandboxed) = (compile(raw), compile(sandboxed));
    let (metered, unmetered) = (Prepared::new(sandboxed).unwrap(), Prepared::new(raw.clone()).unwrap());
    let (args, stdin) = (w.js_args(), Uint8Array::from(w.stdin));
    let out = w.run(&metered);
    assert_eq!(w.run(&unmetered), out, "the fuel meter changes nothing but the count");
    assert_eq!(bare_run(&raw, args.clone(), &stdin), out, "the bare shim gives the same output");
    let n = iters();
    let (ours, plain) = paired_ms(n, n, || drop(w.run(&metered)), || drop(w.run(&unmetered)));
    report(
        &format!("{key}_meter"),
        &format!("{what} (sandboxed, fuel-metered)"),
        "ms",
        ours,
        "same module unmetered, same runner",
        plain,
        n,
    );
    let (ours, bare) = paired_ms(n, n, || drop(w.run(&metered)), || drop(bare_run(&raw, args.clone(), &stdin)));
    report(
        &format!("{key}_bare"),
        &format!("{what} (sandboxed, fuel-metered)"),
        "ms",
        ours,
        "same module bare: new instance + minimal JS WASI shim",
        bare,
        n,
    );
}

#[wasm_bindgen_test]
fn cpu_bound_mandelbrot_tile() {
    let w = Workload { program: "mandelbrot.wasm", args: &TILE_ARGS, stdin: TILE_STDIN };
    cpu_bound("tile", "Mandelbrot tile 64x64, 2000 iterations (floating point)", &w, MANDELBROT, MANDELBROT_SANDBOXED);
}

#[wasm_bindgen_test]
fn cpu_bound_hash_chain() {
    let w = Workload { program: "hashchain.wasm", args: &CHAIN_ARGS, stdin: CHAIN_STDIN };
    cpu_bound("chain", "SHA-256 chain, 20000 rounds (integer)", &w, HASHCHAIN, HASHCHAIN_SANDBOXED);
}

#[wasm_bindgen_test]
fn cpu_bound_bulk_hash() {
    let w = Workload { program: "hashchain.wasm", args: &BULK_ARGS, stdin: CHAIN_STDIN };
    cpu_bound("bulk", "SHA-256 over 64 MiB (integer, streaming through memory)", &w, HASHCHAIN, HASHCHAIN_SANDBOXED);
}

#[wasm_bindgen_test]
fn cpu_bound_sort() {
    let w = Workload { program: "sort.wasm", args: &SORT_ARGS, stdin: SORT_STDIN };
    cpu_bound("sort", "sort of 1,000,000 integers (memory-bound)", &w, SORT, SORT_SANDBOXED);
}

#[wasm_bindgen::prelude::wasm_bindgen(module = "/tests/js/workers.js")]
extern "C" {
    fn spawn_test_executor() -> web_sys::Worker;
    fn spawn_echo_worker() -> web_sys::Worker;
}

/// The whole cycle as the agent sees it: a lease for the empty module posted
/// to a real executor Worker (through the agent's `Executors`, with the module and the
/// encoded lease), run there, and the result frame back. The baseline is the
/// same two messages with a Worker that only echoes.
#[wasm_bindgen_test]
async fn round_trip_to_an_executor() {
    use futures_channel::mpsc;
    use futures_util::StreamExt;
    use idlecore_protocol::{decode_worker, Lease, TaskLimits, WorkerMessage};
    use idlecore_wasm::agent::executors::{ExecutorEvent, Executors};
    use std::rc::Rc;

    let module = compile(EMPTY_SANDBOXED);
    let n = iters() * 50;
    let lease = |lease| Lease {
        lease,
        job: 1,
        task: 0,
        module: idlecore_protocol::Sha256Hash([7; 32]),
        stdin: vec![],
        args: vec![],
        env: vec![],
        limits: TaskLimits { timeout_ms: 60_000, max_output_bytes: 1024, max_memory_pages: 16, fuel: 1_000_000 },
        seed: 1,
        deterministic: true,
        dirs: vec![],
        blobs: vec![],
    };

    let (tx, mut rx) = mpsc::unbounded();
    let spawn = wasm_bindgen::closure::Closure::<dyn FnMut() -> web_sys::Worker>::new(spawn_test_executor);
    let notify: Rc<dyn Fn(u32, ExecutorEvent)> = Rc::new(move |id, e| {
        let _ = tx.unbounded_send((id, e));
    });
    let mut executors = Executors::new(spawn.as_ref().unchecked_ref::<Function>().clone(), notify);
    executors.spawn(0, 1).expect("starts an executor");
    match rx.next().await {
        Some((1, ExecutorEvent::Ready)) => {}
        Some((_, ExecutorEvent::Crashed(m))) => panic!("the executor did not start: {m}"),
        _ => panic!("the executor did not start"),
    }
    // One warm-up cycle, then n timed ones.
    let mut start = 0.0;
    for id in 0..=n as u128 {
        if id == 1 {
            start = now_ms();
        }
        executors.run(0, &module, lease(id), &[]).expect("posts");
        match rx.next().await {
            Some((1, ExecutorEvent::Done(frame))) => match decode_worker(&frame) {
                Ok(WorkerMessage::Result(r)) => assert_eq!((r.lease, r.exit_code), (id, 0)),
                other => panic!("expected a result, got {other:?}"),
            },
            _ => panic!("expected the run to end"),
        }
    }
    let executor = (now_ms() - start) / n as f64;

    let echo = spawn_echo_worker();
    let (etx, mut erx) = mpsc::unbounded::<()>();
    let on_message = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |_| {
        let _ = etx.unbounded_send(());
    });
    echo.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    erx.next().await.expect("echo worker starts");
    let frame = idlecore_protocol::encode_coordinator(&idlecore_protocol::CoordinatorMessage::Lease(lease(1)));
    for i in 0..=n {
        if i == 1 {
            start = now_ms();
        }
        let bytes = Uint8Array::from(frame.as_slice());
        echo.post_message(&js_sys::Array::of2(&module, &bytes)).expect("posts");
        erx.next().await.expect("echo");
    }
    let bare = (now_ms() - start) / n as f64;
    echo.terminate();
    report(
        "round_trip",
        "round trip agent → executor Worker → agent, empty module (lease and result frames)",
        "µs",
        executor * 1000.0,
        "same messages to a Worker that only echoes",
        bare * 1000.0,
        n,
    );
}
