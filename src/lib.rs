//! idlecore's browser worker.
//!
//! The page (script tag or `import { start } from 'idlecore'`) starts an agent
//! in a dedicated module Worker (`agent.js` → [`agent_main`]). The agent
//! hosts the agent core (`idlecore_agent_core`: the coordinator session,
//! leases, executors' states, blobs) and carries out what it decides; each
//! leased task runs in an executor Worker (`executor.js` →
//! [`executor_main`]) under the WASI host (`idlecore_wasi_host`).
//!
//! Modules, each importing only those after it: `api` (entry points),
//! `agent` (the core's browser host: executor Workers, blobs from the Cache
//! API, peers or HTTP, peer transfers), `transport` (the coordinator
//! connection: a WebSocket or a data channel), `page` (everything between
//! the agent and its page: options, commands, status and events),
//! `peer_link` (a data channel the page handed over), `blob_transfer`
//! (moving a blob between peers: chunked, size-checked, SHA-256 verified),
//! `executor` (an executor Worker's side: the JS binding of the WASI host,
//! instances kept and reset between runs).

pub mod blob_transfer;
pub mod executor;

#[cfg(target_arch = "wasm32")]
pub mod agent;
#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
pub mod page;
#[cfg(target_arch = "wasm32")]
pub mod peer_link;
#[cfg(target_arch = "wasm32")]
pub mod transport;

#[cfg(target_arch = "wasm32")]
pub use api::{agent_main, executor_main};
