//! Execution benchmarks, in a dedicated Worker (where executors run). Under
//! `cargo xtask test` they run a few iterations as a smoke test and check their
//! outputs; `cargo xtask bench` builds them in release with more iterations
//! (`IDLECORE_BENCH_ITERS`) and records the `BENCH` lines they print.

#![cfg(target_arch = "wasm32")]

use idlecore_wasm::wasi::host::{run, RunLimits};
use idlecore_wasm::wasi::WasiCtx;
use js_sys::{Function, Object, Reflect, Uint8Array, WebAssembly};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const ITERS: &str = match option_env!("IDLECORE_BENCH_ITERS") {
    Some(v) => v,
    None => "3",
};

macro_rules! bench_module {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench/", $name))
    };
}
const EMPTY: &[u8] = bench_module!("empty.wasm");
const EMPTY_SANDBOXED: &[u8] = bench_module!("empty.sandboxed.wasm");
const MANDELBROT: &[u8] = bench_module!("mandelbrot.wasm");
const MANDELBROT_SANDBOXED: &[u8] = bench_module!("mandelbrot.sandboxed.wasm");

/// The tile `cargo xtask bench` also runs natively and in wasmtime.
pub const TILE_ARGS: [&str; 6] = ["--tiles", "8", "--size", "64", "--iter", "2000"];
const TILE_STDIN: &[u8] = b"3 4\n";

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

fn report(name: &str, unit: &str, value: f64, baseline_name: &str, baseline: f64, runs: u32) {
    console_log!(
        "BENCH {{\"name\":\"{name}\",\"unit\":\"{unit}\",\"value\":{value},\"baseline_name\":\"{baseline_name}\",\"baseline\":{baseline},\"runs\":{runs}}}"
    );
}

fn tile_ctx() -> WasiCtx {
    let args: Vec<String> = TILE_ARGS.iter().map(|s| s.to_string()).collect();
    WasiCtx::new("mandelbrot.wasm", &args, &[], TILE_STDIN.to_vec(), 1, 1 << 20)
}

const LIMITS: RunLimits = RunLimits { fuel: 0, max_memory_pages: 16384 };

#[wasm_bindgen_test]
fn fixed_cost_per_task_of_an_empty_module() {
    let (raw, sandboxed) = (compile(EMPTY), compile(EMPTY_SANDBOXED));
    let n = iters() * 100;
    let idlecore = mean_ms(n, || {
        let out = run(&sandboxed, WasiCtx::new("empty.wasm", &[], &[], vec![], 1, 1024), LIMITS).expect("runs");
        assert_eq!(out.exit_code, 0);
    });
    let imports = Object::new();
    let bare = mean_ms(n, || {
        let instance = WebAssembly::Instance::new(&raw, &imports).expect("instantiates");
        let start: Function = Reflect::get(&instance.exports(), &JsValue::from_str("_start")).unwrap().unchecked_into();
        start.call0(&JsValue::UNDEFINED).expect("runs");
    });
    report("fixed cost per task, empty module (WASI host + sandbox)", "µs", idlecore * 1000.0, "bare instantiate + _start, no imports", bare * 1000.0, n);
}

#[wasm_bindgen_test]
fn cpu_bound_mandelbrot_tile() {
    let (raw, sandboxed) = (compile(MANDELBROT), compile(MANDELBROT_SANDBOXED));
    let metered_out = run(&sandboxed, tile_ctx(), LIMITS).expect("runs").stdout;
    let raw_out = run(&raw, tile_ctx(), LIMITS).expect("runs").stdout;
    assert_eq!(metered_out, raw_out, "the fuel meter changes nothing but the count");
    assert!(metered_out.starts_with(b"P6\n64 64\n255\n"));
    // Alternate the two so that noise from other processes falls on both alike.
    let n = iters();
    let (mut metered, mut unmetered) = (0.0, 0.0);
    for _ in 0..n {
        metered += mean_ms(1, || {
            run(&sandboxed, tile_ctx(), LIMITS).expect("runs");
        });
        unmetered += mean_ms(1, || {
            run(&raw, tile_ctx(), LIMITS).expect("runs");
        });
    }
    let (metered, unmetered) = (metered / n as f64, unmetered / n as f64);
    report("Mandelbrot tile 64x64, 2000 iterations (sandboxed, fuel-metered)", "ms", metered, "same module unmetered, same host", unmetered, n);
}
