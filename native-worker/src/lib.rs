//! idlecore's native worker: the same agent as the browser's
//! (`idlecore-agent-core`), with wasmtime (Cranelift) as the engine and the
//! project's own preview1 host (`idlecore-wasi-host`), so that a task run
//! here gives the same outputs, exit codes, files, fuel counts and failure
//! kinds as in Chromium, and browsers and native workers vote in one quorum.
//!
//! `engine` compiles and runs modules (instances kept and reset between
//! runs, fuel and memory caps as the browser reads them, runs stopped by an
//! epoch ticker); `host` binds the preview1 imports; `executors` runs each
//! slot's executor on a thread of its own; `blobs` fetches modules and
//! inputs by hash and keeps modules on disk; `agent` is the event loop
//! around the agent core (the coordinator connection, signals).

pub mod agent;
pub mod blobs;
pub mod engine;
pub mod executors;
pub mod host;

pub use agent::{run, Config};
