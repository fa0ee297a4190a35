//! idlecore's browser worker.
//!
//! The page (script tag or `import { start } from 'idlecore'`) starts an agent
//! in a dedicated module Worker (`agent.js` → [`agent_main`]). The agent holds
//! the coordinator session and hands each leased task to an executor Worker
//! (`executor.js` → [`executor_main`]), which runs the task module under the
//! WASI host in [`wasi`].
//!
//! Modules by host concern: `transport` (WebSocket), `agent` (session,
//! leases), `agent/modules` (download, verify, persistent and compiled
//! module caches), `blob_transfer` (moving a module between peers over a
//! data channel: chunked, size-checked, SHA-256 verified), `peer_link` (a
//! data channel the page handed to the agent), `agent/peers` (fetching
//! from and serving peers), `lru`,
//! `executor` (executor Workers and deadlines), `wasi` (the preview1 host),
//! `status` (events to the page), `api` (entry points).

pub mod blob_transfer;
pub mod budget;
pub mod executor;
pub mod lru;

#[cfg(target_arch = "wasm32")]
pub mod agent;
#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
pub mod peer_link;
#[cfg(target_arch = "wasm32")]
pub mod status;
#[cfg(target_arch = "wasm32")]
pub mod transport;

#[cfg(target_arch = "wasm32")]
pub use api::{agent_main, executor_main};
