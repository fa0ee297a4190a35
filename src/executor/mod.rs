//! Task execution off the agent's thread: one executor Worker per slot.
//!
//! The agent posts `[WebAssembly.Module, Uint8Array(Lease frame)]`: the lease
//! exactly as the coordinator encoded it. The executor answers with one
//! protocol frame (`Result` or `Failure`) that the agent forwards as it is.

#[cfg(target_arch = "wasm32")]
pub mod pool;
#[cfg(target_arch = "wasm32")]
pub mod worker;
