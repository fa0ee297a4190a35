//! Wasmtime set up for task modules: one [`Engine`] per process (Cranelift,
//! epoch interruption driven by a ticker thread so a run can be stopped),
//! modules compiled and checked once ([`Compiled`]), and each executor's
//! instances kept and reset between runs ([`Executor`]), as the browser
//! executor does (`src/executor/instance.rs`): the same checks, the same
//! fuel meter and memory cap (the globals the coordinator's sandboxing adds),
//! the same failure kinds.

use crate::host::{self, Host, Stop};
use idlecore_agent_core::lru::Lru;
use idlecore_protocol::Sha256Hash;
pub use idlecore_wasi_host::task::{RunError, RunOutput};
use idlecore_wasi_host::{Abort, WasiCtx, PREVIEW1, WASI};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::{ExternType, Global, Instance, Linker, Memory, Module, Store, StoreLimitsBuilder, Trap, TypedFunc, Val};

/// Exports the coordinator's sandboxing adds to every module (see
/// `coordinator/src/sandbox/mod.rs`). A module without them runs unmetered,
/// in a new instance each time.
const FUEL: &str = "idlecore_fuel";
const MEMORY_CAP: &str = "idlecore_memory_cap";
const MEMORY_DENIED: &str = "idlecore_memory_denied";
const RESET: &str = "idlecore_reset";

/// Largest real memory, in pages, of an instance kept for the next run (as
/// in the browser): a reset zeroes all of it.
const KEEP_MAX_PAGES: u64 = 256;
/// Modules an executor keeps an instance of.
const INSTANCES_KEPT: usize = 4;
/// How often a running store checks whether it must stop.
const TICK: Duration = Duration::from_millis(5);
/// Stack a task may use: about what a browser gives a Worker's WebAssembly.
const WASM_STACK: usize = 1 << 20;
/// The executor threads' stacks hold the wasm stack and the host's calls.
pub const THREAD_STACK: usize = 8 << 20;

/// Limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Instructions; 0 means no limit.
    pub fuel: u64,
    /// Largest linear memory, in 64 KiB pages.
    pub max_memory_pages: u32,
}

/// The process's engine and the linker with the preview1 host.
pub struct Runtime {
    engine: wasmtime::Engine,
    linker: Linker<Host>,
    /// Stores running now; the ticker sleeps while there are none.
    running: Arc<AtomicUsize>,
    ticker: std::thread::Thread,
}

/// The runtime every executor of this process shares.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().expect("wasmtime's engine can be set up on this machine"))
}

impl Runtime {
    fn new() -> wasmtime::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // Relaxed SIMD instructions give the same answers on every machine.
        config.relaxed_simd_deterministic(true);
        config.max_wasm_stack(WASM_STACK);
        let engine = wasmtime::Engine::new(&config)?;
        let linker = host::linker(&engine)?;
        let running = Arc::new(AtomicUsize::new(0));
        let ticking = running.clone();
        let clock = engine.weak();
        let ticker = std::thread::Builder::new()
            .name("idlecore-epoch".into())
            .spawn(move || loop {
                if ticking.load(Ordering::Acquire) == 0 {
                    std::thread::park();
                    continue;
                }
                std::thread::sleep(TICK);
                match clock.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            })
            .map_err(wasmtime::Error::msg)?
            .thread()
            .clone();
        Ok(Runtime { engine, linker, running, ticker })
    }

    /// Compiles and checks a module (see [`Compiled`]).
    pub fn compile(&self, hash: Sha256Hash, wasm: &[u8]) -> Result<Compiled, String> {
        let module = Module::new(&self.engine, wasm).map_err(|e| format!("compiling module: {e:#}"))?;
        let resettable = check_module(&module)?;
        Ok(Compiled { hash, module, resettable })
    }
}

/// A module compiled and checked once: it imports only preview1 functions
/// and exports `_start` and its memory.
#[derive(Clone)]
pub struct Compiled {
    pub hash: Sha256Hash,
    module: Module,
    /// It exports `idlecore_reset`, so one instance can serve many runs.
    resettable: bool,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiled({})", self.hash)
    }
}

/// The browser executor's check, word for word in its errors.
fn check_module(module: &Module) -> Result<bool, String> {
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        let kind = match import.ty() {
            ExternType::Func(_) => "function",
            ExternType::Global(_) => "global",
            ExternType::Memory(_) => "memory",
            ExternType::Table(_) => "table",
            ExternType::Tag(_) => "tag",
        };
        if m != WASI || kind != "function" || !PREVIEW1.contains(&name) {
            return Err(format!("imports {kind} `{m}.{name}`, which the idlecore WASI host does not provide"));
        }
    }
    let has = |n: &str, func: bool| {
        module.exports().any(|e| e.name() == n && if func { e.ty().func().is_some() } else { e.ty().memory().is_some() })
    };
    if !has("_start", true) {
        return Err("exports no `_start` function; build the module as a WASI command".into());
    }
    if !has("memory", false) {
        return Err("exports no memory".into());
    }
    Ok(has(RESET, true))
}

/// An instance and the exports a run uses, looked up once.
struct Live {
    store: Store<Host>,
    memory: Memory,
    start: TypedFunc<(), ()>,
    reset: Option<TypedFunc<i32, ()>>,
    fuel: Option<Global>,
    cap: Option<Global>,
    denied: Option<Global>,
    initial_pages: u64,
    /// Whether `_start` has run since the instance was made.
    used: bool,
}

/// One executor's runs: its kept instances, by module.
pub struct Executor {
    kept: Lru<Sha256Hash, Live>,
    instances: u32,
}

impl Default for Executor {
    fn default() -> Self {
        Executor { kept: Lru::new(INSTANCES_KEPT), instances: 0 }
    }
}

/// Counts a store as running while alive, waking the ticker.
struct Running<'a>(&'a Runtime);

impl<'a> Running<'a> {
    fn start(rt: &'a Runtime) -> Running<'a> {
        if rt.running.fetch_add(1, Ordering::AcqRel) == 0 {
            rt.ticker.unpark();
        }
        Running(rt)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Executor {
    /// How many instances this executor's runs have made.
    pub fn instances(&self) -> u32 {
        self.instances
    }

    /// Runs `_start` of `module` to its end, or until `stop` says so (then
    /// a trap saying it was interrupted).
    pub fn run(&mut self, module: &Compiled, ctx: WasiCtx, limits: RunLimits, stop: &Stop) -> Result<RunOutput, RunError> {
        let rt = runtime();
        let _running = Running::start(rt);
        let mut live = match self.kept.remove(&module.hash) {
            Some(live) => live,
            None => self.instantiate(rt, module, limits, stop)?,
        };
        live.store.data_mut().ctx = ctx;
        live.store.data_mut().stop = stop.clone();
        live.store.data_mut().limits = limits_for(limits);
        let result = run_live(&mut live, limits, stop);
        let pages = live.memory.size(&live.store);
        // A kept instance lets go of the run's state; the host keeps nothing of it.
        live.store.data_mut().ctx = empty_ctx();
        if live.reset.is_some() && pages <= KEEP_MAX_PAGES && !stop.cancel.load(Ordering::Relaxed) {
            self.kept.insert(module.hash, live, 1);
        }
        result
    }

    fn instantiate(&mut self, rt: &Runtime, module: &Compiled, limits: RunLimits, stop: &Stop) -> Result<Live, RunError> {
        self.instances += 1;
        let host = Host { ctx: empty_ctx(), memory: None, limits: limits_for(limits), stop: stop.clone() };
        let mut store = Store::new(&rt.engine, host);
        store.limiter(|h| &mut h.limits);
        arm(&mut store);
        let instance: Instance = rt.linker.instantiate(&mut store, &module.module).map_err(|e| {
            let text = format!("{e:#}");
            // The module's initial memory is past the cap, as the browser finds it.
            if text.contains("memory") && (text.contains("limit") || text.contains("exceeds")) {
                RunError::MemoryLimit(text)
            } else if e.downcast_ref::<Trap>().is_some() {
                RunError::Trap(text)
            } else {
                RunError::Invalid(text)
            }
        })?;
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| RunError::Invalid("no exported memory".into()))?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start").map_err(|e| RunError::Invalid(format!("{e:#}")))?;
        let reset = if module.resettable { instance.get_typed_func::<i32, ()>(&mut store, RESET).ok() } else { None };
        let fuel = instance.get_global(&mut store, FUEL);
        let cap = instance.get_global(&mut store, MEMORY_CAP);
        let denied = instance.get_global(&mut store, MEMORY_DENIED);
        store.data_mut().memory = Some(memory);
        let initial_pages = memory.size(&store);
        Ok(Live { store, memory, start, reset, fuel, cap, denied, initial_pages, used: false })
    }
}

/// What a store may grow to: the cap in bytes (the sandboxed module checks
/// the cap itself; this also holds modules run without sandboxing).
fn limits_for(limits: RunLimits) -> wasmtime::StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size((limits.max_memory_pages as usize).saturating_mul(65536))
        .table_elements(10_000_000)
        .instances(1)
        .build()
}

/// Stops the store's code at the next tick once its run must stop.
fn arm(store: &mut Store<Host>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        if ctx.data().stop.due() {
            Ok(wasmtime::UpdateDeadline::Interrupt)
        } else {
            Ok(wasmtime::UpdateDeadline::Continue(1))
        }
    });
}

fn empty_ctx() -> WasiCtx {
    WasiCtx::new("", &[], &[], Vec::new(), 0, 0)
}

fn run_live(live: &mut Live, limits: RunLimits, stop: &Stop) -> Result<RunOutput, RunError> {
    if live.initial_pages > limits.max_memory_pages as u64 {
        return Err(RunError::MemoryLimit(format!(
            "the module starts with {} pages of memory; the cap is {} pages",
            live.initial_pages, limits.max_memory_pages
        )));
    }
    live.store.set_epoch_deadline(1);
    if let Some(reset) = &live.reset {
        let fresh = !live.used as i32;
        if let Err(e) = reset.call(&mut live.store, fresh) {
            // Its data segments do not fit its memory, as instantiation would have found.
            live.reset = None;
            return Err(RunError::Trap(trap_text(&e)));
        }
    }
    live.used = true;
    if let Some(cap) = &live.cap {
        let _ = cap.set(&mut live.store, Val::I32(limits.max_memory_pages as i32));
    }
    let budget = if limits.fuel == 0 { i64::MAX } else { limits.fuel.min(i64::MAX as u64) as i64 };
    if let Some(fuel) = &live.fuel {
        let _ = fuel.set(&mut live.store, Val::I64(budget));
    }
    let outcome = live.start.call(&mut live.store, ());
    let left = live.fuel.as_ref().and_then(|g| g.get(&mut live.store).i64());
    let fuel_used = left.map(|left| (budget as i128 - left.max(0) as i128).max(0) as u64).unwrap_or(0);
    let mut ctx = std::mem::replace(&mut live.store.data_mut().ctx, empty_ctx());
    let exit_code = match (outcome, ctx.abort.take()) {
        (_, Some(Abort::Exit(code))) => code,
        (_, Some(Abort::OutputLimit(max))) => return Err(RunError::OutputLimit(max)),
        (_, Some(Abort::InvalidExit(code))) => {
            return Err(RunError::Trap(format!("exit with invalid exit status {code}, outside of [0..126)")))
        }
        (Ok(()), None) => 0,
        (Err(e), None) => {
            if left.is_some_and(|l| l < 0) {
                return Err(RunError::FuelExhausted(fuel_used));
            }
            let denied = live.denied.as_ref().and_then(|g| g.get(&mut live.store).i32()).unwrap_or(0);
            if denied != 0 {
                return Err(RunError::MemoryLimit(format!(
                    "memory.grow past the cap of {} pages was refused, then the task trapped ({})",
                    limits.max_memory_pages,
                    trap_text(&e)
                )));
            }
            if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) && stop.due() {
                return Err(RunError::Trap("interrupted: the run was stopped".into()));
            }
            return Err(RunError::Trap(trap_text(&e)));
        }
    };
    let files = idlecore_wasi_host::task::output_files(&ctx);
    Ok(RunOutput { exit_code, stdout: std::mem::take(&mut ctx.stdout), stderr: std::mem::take(&mut ctx.stderr), fuel_used, files })
}

/// A trap in the words Chromium uses for it, so a failure reads the same
/// whichever worker ran the task.
fn trap_text(e: &wasmtime::Error) -> String {
    let Some(trap) = e.downcast_ref::<Trap>() else { return format!("{e:#}") };
    let words = match trap {
        Trap::UnreachableCodeReached => "unreachable",
        Trap::MemoryOutOfBounds => "memory access out of bounds",
        Trap::IntegerDivisionByZero => "divide by zero",
        Trap::IntegerOverflow => "divide result unrepresentable",
        Trap::BadConversionToInteger => "float unrepresentable in integer range",
        Trap::TableOutOfBounds => "table index is out of bounds",
        Trap::IndirectCallToNull | Trap::BadSignature => "null function or function signature mismatch",
        Trap::StackOverflow => return "RangeError: Maximum call stack size exceeded".into(),
        other => return format!("RuntimeError: {other}"),
    };
    format!("RuntimeError: {words}")
}
