//! Task execution off the agent's thread, in executor Workers (the agent
//! starts them: `agent::executors`).
//! `instance` runs a module in this thread under `js_host`, the WASI host's
//! binding to a JS `WebAssembly.Instance`.
//!
//! The agent posts `[WebAssembly.Module, Uint8Array(Lease frame)]`: the lease
//! exactly as the coordinator encoded it. The executor answers with one
//! protocol frame (`Result` or `Failure`) that the agent forwards as it is.

#[cfg(target_arch = "wasm32")]
pub mod instance;
#[cfg(target_arch = "wasm32")]
pub mod js_host;
#[cfg(target_arch = "wasm32")]
pub mod worker;

/// `performance.now()` of this Worker (Date.now() where there is none).
#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> f64 {
    use wasm_bindgen::JsCast;
    js_sys::global().dyn_into::<web_sys::WorkerGlobalScope>().ok().and_then(|g| g.performance()).map_or_else(js_sys::Date::now, |p| p.now())
}
