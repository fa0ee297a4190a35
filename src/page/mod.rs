//! Everything between the agent Worker and the page that started it, in one
//! place: what the page posts (`messages`: the options once, then control
//! and peer-connection messages), and what the agent posts back (status,
//! task events, errors, peer-connection requests), dispatched by `index.js`
//! to `handle.on(...)` listeners and `peers.js`. docs/embedding.md lists
//! every message; `pkg-config/messages.js` names them for the page's side.

pub mod messages;

pub use idlecore_agent_core::{Status, TaskEvent};
pub use messages::{AgentOptions, Control, PageMessage, Rtc};

use serde::Serialize;
use wasm_bindgen::JsCast;
use web_sys::DedicatedWorkerGlobalScope;

/// The `type` of each message the agent posts to the page.
pub mod kind {
    /// The agent's [`super::Status`].
    pub const STATUS: &str = "status";
    /// A [`super::TaskEvent`].
    pub const TASK: &str = "task";
    /// `{message, fatal}`: fatal ends the agent (the page's status `failed`).
    pub const ERROR: &str = "error";
    /// A [`super::Rtc`] for the page's peer connections.
    pub const RTC: &str = "rtc";
}

fn post(kind: &str, value: &impl Serialize) {
    let Ok(v) = serde_wasm_bindgen::to_value(value) else { return };
    let _ = js_sys::Reflect::set(&v, &"type".into(), &kind.into());
    if let Ok(scope) = js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>() {
        let _ = scope.post_message(&v);
    }
}

pub fn report_status(s: &Status) {
    post(kind::STATUS, s);
}

pub fn report_task(t: &TaskEvent) {
    post(kind::TASK, t);
}

/// A message for the page's peer connections (`pkg-config/peers.js`).
pub fn post_rtc(msg: &Rtc) {
    post(kind::RTC, msg);
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    message: &'a str,
    /// The agent cannot go on: the page ends it (status `failed`).
    fatal: bool,
}

pub fn report_error(message: &str) {
    post(kind::ERROR, &ErrorEvent { message, fatal: false });
}

pub fn report_fatal(message: &str) {
    post(kind::ERROR, &ErrorEvent { message, fatal: true });
}
