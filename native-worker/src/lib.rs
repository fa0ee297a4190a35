//! idlecore's native worker: the same agent as the browser's
//! (`idlecore-agent-core`), with wasmtime (Cranelift) as the engine and the
//! project's own preview1 host (`idlecore-wasi-host`), so that a task run
//! here gives the same outputs, exit codes, files, fuel counts and failure
//! kinds as in Chromium, and browsers and native workers vote in one quorum.
//!
//! The engine is `idlecore-native-engine` (re-exported as `engine` and
//! `host`); `executors` runs each slot's executor on a thread of its own;
//! `blobs` fetches modules and inputs by hash and keeps modules on disk;
//! `agent` is the event loop around the agent core (the coordinator
//! connection, signals).

pub mod agent;
pub mod blobs;
pub mod executors;

pub use idlecore_native_engine::{engine, host};

pub use agent::{run, Config};
