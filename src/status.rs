//! What the agent tells the page: status and task events, posted from the
//! agent Worker and dispatched to `handle.on(...)` listeners by `index.js`.

use serde::Serialize;
use wasm_bindgen::JsCast;
use web_sys::DedicatedWorkerGlobalScope;

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

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskEvent {
    pub job: u64,
    pub task: u32,
    pub ok: bool,
    pub elapsed_ms: u32,
}

fn post(kind: &str, value: &impl Serialize) {
    let Ok(v) = serde_wasm_bindgen::to_value(value) else { return };
    let _ = js_sys::Reflect::set(&v, &"type".into(), &kind.into());
    if let Ok(scope) = js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>() {
        let _ = scope.post_message(&v);
    }
}

pub fn report_status(s: &Status) {
    post("status", s);
}

pub fn report_task(t: &TaskEvent) {
    post("task", t);
}

/// A message for the page's peer connections (`pkg-config/peers.js`).
pub fn post_rtc(msg: &crate::agent::peers::Rtc) {
    post("rtc", msg);
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    message: &'a str,
    /// The agent cannot go on: the page ends it (status `failed`).
    fatal: bool,
}

pub fn report_error(message: &str) {
    post("error", &ErrorEvent { message, fatal: false });
}

pub fn report_fatal(message: &str) {
    post("error", &ErrorEvent { message, fatal: true });
}
