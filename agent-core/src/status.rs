//! What the agent shows: its status (the page posts it to `handle.on('status')`)
//! and one event per task run here.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `connecting`, `connected`, `paused` or `disconnected` (the page adds
    /// `waiting-consent`, `declined`, `standby`, `unsupported`, `failed`, `stopped`).
    pub state: &'static str,
    pub coordinator: String,
    /// Executors running now.
    pub workers: u32,
    /// Share of the device's cores × time the budget gives now (0 when paused).
    pub cpu: f64,
    /// Time executors spent running tasks, in seconds.
    pub cpu_seconds: f64,
    /// Bytes received from the coordinator (frames and downloaded modules).
    pub bytes_in: u64,
    /// Bytes sent to the coordinator.
    pub bytes_out: u64,
    pub running: u32,
    pub queued: u32,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub connects: u64,
    /// Modules loaded from the persistent cache instead of the network.
    pub modules_from_cache: u64,
    /// Modules fetched from other visitors over data channels.
    pub modules_from_peers: u64,
    /// Module bytes received from peers (not counted in `bytes_in`).
    pub bytes_from_peers: u64,
    /// Module bytes sent to peers.
    pub bytes_to_peers: u64,
    /// Peer fetches given up (then fetched from the coordinator).
    pub peer_fallbacks: u64,
    pub last_error: Option<String>,
}

/// A task ran (`ok`) or failed here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskEvent {
    pub job: u64,
    pub task: u32,
    pub ok: bool,
    pub elapsed_ms: u32,
}
