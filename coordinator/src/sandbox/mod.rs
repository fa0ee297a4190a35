//! Checks a task module at upload and instruments it once, for every worker:
//!
//! - **Fuel.** An exported mutable global `idlecore_fuel` (i64) is charged the
//!   number of instructions of each straight-line segment when the segment is
//!   entered, and checked at every function entry and loop header. When it
//!   falls below zero the module executes `unreachable`. The host sets the
//!   budget before `_start` and reads what is left afterwards, so a runaway task
//!   stops at the same instruction on every machine and fuel used is exact.
//! - **Memory cap.** Every `memory.grow` becomes a call to an added function
//!   that fails (returns -1, as the instruction does when memory is exhausted)
//!   past the exported mutable global `idlecore_memory_cap` (pages), which the
//!   host sets per task. A refusal also sets `idlecore_memory_denied`.
//!
//! - **Memory size.** The module sees its memory's size through the global
//!   `pages`, not `memory.size`: `memory.grow` bumps it and grows the real
//!   memory only when the new size exceeds it. A reused instance (below) whose
//!   memory grew in an earlier run therefore looks exactly like a new one.
//! - **Reuse.** Instantiating costs far more than a small task's run (memory
//!   reservation, page faults, data segments), so a worker keeps one instance
//!   per module and resets it between runs. A module qualifies when nothing
//!   but memory and mutable globals carries state between runs: no start
//!   function, no imported globals, no passive data segments, no instruction
//!   that changes tables or segments. Its active data segments become passive,
//!   and an added export `idlecore_reset(fresh)` zeroes memory (unless the
//!   instance is new), copies the segments back in, re-evaluates every mutable
//!   global's initialiser and sets `pages` to the initial size. Accesses between
//!   `pages` and the real size do not trap as they would in a new instance;
//!   only a program reading past its own memory's end can tell.
//!
//! Segments end at every instruction that can transfer control (`block`,
//! `loop`, `if`, `else`, `end`, branches, calls, `return`, `unreachable`, and
//! the exception and tail-call instructions), so a segment is always run whole
//! once entered, except when it traps.

pub mod comparator;
pub mod native;
mod rewrite;
mod shape;

use wasm_encoder::reencode::{Error as ReencodeError, Reencode};
use wasm_encoder::Module;
use wasmparser::Parser;

pub const FUEL_EXPORT: &str = "idlecore_fuel";
pub const MEMORY_CAP_EXPORT: &str = "idlecore_memory_cap";
/// Set to 1 when a `memory.grow` was refused, so the host can tell a trap
/// that follows from other traps.
pub const MEMORY_DENIED_EXPORT: &str = "idlecore_memory_denied";
/// `idlecore_reset(fresh: i32)`: puts a used instance back in the state of a
/// new one (see the module docs). Only modules that can be reset export it.
pub const RESET_EXPORT: &str = "idlecore_reset";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error("components are not supported; upload a core WASI preview1 module")]
    Component,
    #[error("unsupported module: {0}")]
    Unsupported(String),
}

/// Validates `wasm` and returns its instrumented form.
pub fn instrument(wasm: &[u8]) -> Result<Vec<u8>, SandboxError> {
    if Parser::is_component(wasm) {
        return Err(SandboxError::Component);
    }
    wasmparser::Validator::new().validate_all(wasm).map_err(|e| SandboxError::Invalid(e.to_string()))?;
    let s = shape::shape(wasm)?;
    let mut r = rewrite::Instrumenter::new(&s);
    let mut module = Module::new();
    r.parse_core_module(&mut module, Parser::new(0), wasm).map_err(|e| match e {
        ReencodeError::ParseError(e) => SandboxError::Invalid(e.to_string()),
        other => SandboxError::Unsupported(other.to_string()),
    })?;
    let out = module.finish();
    wasmparser::Validator::new()
        .validate_all(&out)
        .map_err(|e| SandboxError::Unsupported(format!("instrumentation produced an invalid module: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests;
