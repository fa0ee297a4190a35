//! Task execution off the agent's thread: one executor Worker per slot.
//!
//! The agent posts `[WebAssembly.Module, Uint8Array(ExecJob)]`; the executor
//! answers with one protocol frame (`Result` or `Failure`) that the agent
//! forwards to the coordinator as it is.

use idlecore_protocol::TaskLimits;
use serde::{Deserialize, Serialize};

#[cfg(target_arch = "wasm32")]
pub mod pool;
#[cfg(target_arch = "wasm32")]
pub mod worker;

/// One task run, as the agent hands it to an executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecJob {
    pub lease: u64,
    #[serde(with = "serde_bytes")]
    pub stdin: Vec<u8>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub seed: u64,
    pub limits: TaskLimits,
}

impl ExecJob {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("exec jobs serialize")
    }
    pub fn decode(bytes: &[u8]) -> Result<ExecJob, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("bad exec job: {e}"))
    }
}
