//! Runs a WASI command module in this browser thread: checks it once, then
//! runs `_start` under the task's limits, keeping one instance of a module
//! the coordinator made resettable and resetting it between runs.
//!
//! Instantiating costs several times a small task's whole run (reserving the
//! memory, faulting its pages in, copying data segments, checking imports),
//! so reuse is what makes the fixed cost per task small. The reset is the
//! module's own `idlecore_reset` (see `coordinator/src/sandbox/mod.rs`), so a
//! reused instance starts exactly as a new one would.

use super::js_host as host;
pub use idlecore_wasi_host::task::{RunError, RunOutput};
use idlecore_wasi_host::{Abort, WasiCtx, PREVIEW1, WASI};
use js_sys::{Function, Object, Reflect, WebAssembly};
use std::cell::{Cell, RefCell};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Exports the coordinator's sandboxing adds to every module. A module
/// without them runs unmetered, in a new instance each time.
const FUEL: &str = "idlecore_fuel";
const MEMORY_CAP: &str = "idlecore_memory_cap";
const MEMORY_DENIED: &str = "idlecore_memory_denied";
const RESET: &str = "idlecore_reset";

/// Largest real memory, in pages, of an instance kept for the next run: a
/// reset zeroes all of it, and a kept instance holds on to it while idle.
const KEEP_MAX_PAGES: u32 = 256;

/// Limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Instructions; 0 means no limit.
    pub fuel: u64,
    /// Largest linear memory, in 64 KiB pages.
    pub max_memory_pages: u32,
}

/// What [`check_module`] learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The module exports `idlecore_reset`, so one instance can serve many runs.
    pub resettable: bool,
}

fn text(o: &JsValue, key: &str) -> Option<String> {
    Reflect::get(o, &key.into()).ok().and_then(|v| v.as_string())
}

/// Checks that the module imports only preview1 functions and exports what a command needs.
pub fn check_module(module: &WebAssembly::Module) -> Result<Checked, String> {
    for import in WebAssembly::Module::imports(module).iter() {
        let get = |k: &str| text(&import, k).unwrap_or_default();
        let (m, name, kind) = (get("module"), get("name"), get("kind"));
        if m != WASI || kind != "function" || !PREVIEW1.contains(&name.as_str()) {
            return Err(format!("imports {kind} `{m}.{name}`, which the idlecore WASI host does not provide"));
        }
    }
    let exports: Vec<(String, String)> = WebAssembly::Module::exports(module)
        .iter()
        .map(|e| (text(&e, "name").unwrap_or_default(), text(&e, "kind").unwrap_or_default()))
        .collect();
    let has = |n: &str, k: &str| exports.iter().any(|(name, kind)| name == n && kind == k);
    if !has("_start", "function") {
        return Err("exports no `_start` function; build the module as a WASI command".into());
    }
    if !has("memory", "memory") {
        return Err("exports no memory".into());
    }
    Ok(Checked { resettable: has(RESET, "function") })
}

fn error_text(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| format!("{}: {}", e.name(), e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn global(exports: &Object, name: &str) -> Option<WebAssembly::Global> {
    Reflect::get(exports, &name.into()).ok().and_then(|g| g.dyn_into::<WebAssembly::Global>().ok())
}

fn function(exports: &Object, name: &str) -> Option<Function> {
    Reflect::get(exports, &name.into()).ok().and_then(|f| f.dyn_into::<Function>().ok())
}

/// An instance and the exports a run uses, looked up once.
struct Live {
    memory: WebAssembly::Memory,
    start: Function,
    reset: Option<Function>,
    fuel: Option<WebAssembly::Global>,
    cap: Option<WebAssembly::Global>,
    denied: Option<WebAssembly::Global>,
    initial_pages: u32,
    /// Whether `_start` has run since the instance was made.
    used: bool,
}

/// A module checked once, with the instance kept from its last run.
pub struct Prepared {
    module: WebAssembly::Module,
    checked: Checked,
    kept: RefCell<Option<Live>>,
    instances: Cell<u32>,
}

impl Prepared {
    pub fn new(module: WebAssembly::Module) -> Result<Prepared, String> {
        let checked = check_module(&module)?;
        Ok(Prepared { module, checked, kept: RefCell::new(None), instances: Cell::new(0) })
    }

    pub fn resettable(&self) -> bool {
        self.checked.resettable
    }

    /// How many instances the runs so far have made.
    pub fn instances(&self) -> u32 {
        self.instances.get()
    }

    fn instantiate(&self, imports: &Object) -> Result<Live, RunError> {
        self.instances.set(self.instances.get() + 1);
        let instance = WebAssembly::Instance::new(&self.module, imports).map_err(|e| {
            let text = error_text(&e);
            // The engine could not allocate the module's initial memory.
            // (An ASCII check: Unicode lowercasing would add its tables to the package.)
            let says_memory = text.as_bytes().windows(6).any(|w| w.eq_ignore_ascii_case(b"memory"));
            if e.is_instance_of::<js_sys::RangeError>() && says_memory {
                RunError::MemoryLimit(text)
            } else {
                RunError::Trap(text)
            }
        })?;
        let exports = instance.exports();
        let memory: WebAssembly::Memory =
            Reflect::get(&exports, &"memory".into()).map_err(|e| RunError::Invalid(error_text(&e)))?.unchecked_into();
        let start = function(&exports, "_start").ok_or_else(|| RunError::Invalid("no `_start` function".into()))?;
        Ok(Live {
            // grow(0) returns the size in pages; a byte length would not fit in 32 bits at 4 GiB.
            initial_pages: memory.grow(0),
            memory,
            start,
            reset: if self.checked.resettable { function(&exports, RESET) } else { None },
            fuel: global(&exports, FUEL),
            cap: global(&exports, MEMORY_CAP),
            denied: global(&exports, MEMORY_DENIED),
            used: false,
        })
    }

    /// Runs `_start` to completion in this thread.
    pub fn run(&self, ctx: WasiCtx, limits: RunLimits) -> Result<RunOutput, RunError> {
        let host = host::host();
        host.begin(ctx);
        let kept = self.kept.borrow_mut().take();
        let mut live = match kept {
            Some(live) => live,
            None => self.instantiate(host.imports()).inspect_err(|_| {
                host.finish();
            })?,
        };
        let result = self.run_live(&host, &mut live, limits);
        // Keep the instance unless its memory grew too large to reset cheaply.
        // (Reading the buffer's length, unlike grow(0), leaves the buffer attached.)
        let pages = live.memory.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() / 65536;
        if live.reset.is_some() && pages <= KEEP_MAX_PAGES {
            *self.kept.borrow_mut() = Some(live);
        }
        result
    }

    fn run_live(&self, host: &host::Host, live: &mut Live, limits: RunLimits) -> Result<RunOutput, RunError> {
        if live.initial_pages > limits.max_memory_pages {
            host.finish();
            return Err(RunError::MemoryLimit(format!(
                "the module starts with {} pages of memory; the cap is {} pages",
                live.initial_pages, limits.max_memory_pages
            )));
        }
        if let Some(reset) = &live.reset {
            let fresh = JsValue::from(!live.used as i32);
            if let Err(e) = reset.call1(&JsValue::UNDEFINED, &fresh) {
                host.finish();
                // Its data segments do not fit its memory, as instantiation would have found.
                live.reset = None;
                return Err(RunError::Trap(error_text(&e)));
            }
        }
        live.used = true;
        if let Some(cap) = &live.cap {
            cap.set_value(&JsValue::from(limits.max_memory_pages as f64));
        }
        let meter = live.fuel.clone().map(|g| Meter::start(g, limits.fuel));
        host.attach(live.memory.clone());
        let outcome = live.start.call0(&JsValue::UNDEFINED);
        let mut ctx = host.finish();
        let fuel_used = meter.as_ref().map(Meter::used).unwrap_or(0);
        let exit_code = match (outcome, ctx.abort.take()) {
            (_, Some(Abort::Exit(code))) => code,
            (_, Some(Abort::OutputLimit(max))) => return Err(RunError::OutputLimit(max)),
            (_, Some(Abort::InvalidExit(code))) => {
                return Err(RunError::Trap(format!("exit with invalid exit status {code}, outside of [0..126)")))
            }
            (Ok(_), None) => 0,
            (Err(e), None) => {
                if meter.as_ref().is_some_and(|m| m.left() < 0) {
                    return Err(RunError::FuelExhausted(fuel_used));
                }
                let denied = live.denied.as_ref().and_then(|g| g.value().as_f64()).unwrap_or(0.0);
                if denied != 0.0 {
                    return Err(RunError::MemoryLimit(format!(
                        "memory.grow past the cap of {} pages was refused, then the task trapped ({})",
                        limits.max_memory_pages,
                        error_text(&e)
                    )));
                }
                return Err(RunError::Trap(error_text(&e)));
            }
        };
        let files = idlecore_wasi_host::task::output_files(&ctx);
        Ok(RunOutput { exit_code, stdout: std::mem::take(&mut ctx.stdout), stderr: std::mem::take(&mut ctx.stderr), fuel_used, files })
    }
}

/// Runs `module` once, in a new instance.
pub fn run(module: &WebAssembly::Module, ctx: WasiCtx, limits: RunLimits) -> Result<RunOutput, RunError> {
    Prepared::new(module.clone()).map_err(RunError::Invalid)?.run(ctx, limits)
}

/// The fuel meter of an instrumented module.
struct Meter {
    global: WebAssembly::Global,
    budget: i64,
}

impl Meter {
    fn start(global: WebAssembly::Global, fuel: u64) -> Meter {
        let budget = if fuel == 0 { i64::MAX } else { fuel.min(i64::MAX as u64) as i64 };
        global.set_value(&JsValue::from(budget));
        Meter { global, budget }
    }

    /// Fuel left; negative once exhausted.
    fn left(&self) -> i64 {
        i64::try_from(self.global.value()).unwrap_or(0)
    }

    fn used(&self) -> u64 {
        (self.budget as i128 - self.left().max(0) as i128).max(0) as u64
    }
}
