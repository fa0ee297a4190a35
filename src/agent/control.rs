//! What the page tells the agent: its options once (`start(options)`), then
//! control messages (pause, resume, a new CPU share) and its peer
//! connections' news (`cmd: 'rtc'`, see `peers`). All are checked by serde; a
//! bad message is reported as an `error` event and ignored.

use super::peers::{PeerEvent, Rtc};
use super::Event;
use crate::budget::{self, Plan};
use idlecore_protocol::limits::MAX_SLOTS;
use serde::Deserialize;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

/// Options from `start(options)` as `index.js` passes them to the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentOptions {
    /// `ws://` or `wss://` URL of the coordinator's worker endpoint.
    pub coordinator: String,
    /// Share of the device's cores × time to give, 0 to 1.
    #[serde(default = "default_cpu")]
    pub cpu: f64,
    /// Cores of the device (`navigator.hardwareConcurrency`).
    #[serde(default)]
    pub cores: Option<u32>,
    /// Most executors at once; default all cores but one.
    #[serde(default)]
    pub max_workers: Option<u32>,
    /// Description sent in `Hello`.
    #[serde(default)]
    pub agent: String,
    /// Byte budget of compiled modules kept in memory, in MiB.
    #[serde(default)]
    pub module_cache_mib: Option<u32>,
    /// Leases to hold queued beyond the running ones, so an executor that
    /// finishes starts its next task without waiting a round trip to the
    /// coordinator. Default: one per executor.
    #[serde(default)]
    pub prefetch: Option<u32>,
    /// Start paused (the page is hidden, or `pause()` came first).
    #[serde(default)]
    pub paused: bool,
}

fn default_cpu() -> f64 {
    0.25
}

impl AgentOptions {
    /// Checks what serde cannot: URL scheme and ranges. The message names the option.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.coordinator.starts_with("ws://") || self.coordinator.starts_with("wss://")) {
            return Err("`coordinator` must be a ws:// or wss:// URL".into());
        }
        check_cpu(self.cpu)?;
        if self.max_workers.is_some_and(|n| n == 0 || n > MAX_SLOTS) {
            return Err(format!("`maxWorkers` must be between 1 and {MAX_SLOTS}"));
        }
        if self.cores.is_some_and(|n| n == 0 || n > 1024) {
            return Err("`cores` must be between 1 and 1024".into());
        }
        if self.prefetch.is_some_and(|n| n > MAX_SLOTS) {
            return Err(format!("`prefetch` must be at most {MAX_SLOTS}"));
        }
        Ok(())
    }

    pub fn cores(&self) -> u32 {
        self.cores.unwrap_or(2).max(1)
    }

    /// Executors and duty cycle for the current share.
    pub fn plan(&self) -> Plan {
        let cores = self.cores();
        budget::plan(self.cpu, cores, self.max_workers.unwrap_or_else(|| budget::default_max_workers(cores)))
    }
}

fn check_cpu(cpu: f64) -> Result<(), String> {
    if cpu.is_finite() && (0.0..=1.0).contains(&cpu) {
        Ok(())
    } else {
        Err(format!("`cpu` must be a number from 0 to 1, not {cpu}"))
    }
}

/// A message from the page to a running agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "cmd", rename_all = "camelCase", deny_unknown_fields)]
pub enum Control {
    /// Stop computing within a second: executors end, held leases go back.
    Pause,
    Resume,
    /// A new CPU share, 0 to 1.
    Cpu { cpu: f64 },
}

/// The Worker's message handler, forwarding control messages as events.
/// Removed when dropped.
pub struct Listener {
    scope: DedicatedWorkerGlobalScope,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.scope.set_onmessage(None);
    }
}

/// `{cmd: 'rtc', ...}` from the page's peer connections: a data channel
/// (`channel`) or an [`Rtc`] message. `None` for other messages.
fn peer_news(data: &JsValue) -> Option<Result<Event, String>> {
    let get = |k: &str| js_sys::Reflect::get(data, &k.into()).ok().filter(|v| !v.is_undefined());
    if get("cmd")?.as_string()? != "rtc" {
        return None;
    }
    if let Some(channel) = get("channel") {
        let peer = get("peer").and_then(|p| p.as_string()).and_then(|p| p.parse().ok());
        return Some(peer.map(|p| Event::Peer(PeerEvent::Channel(p, channel))).ok_or_else(|| "a channel without a peer".into()));
    }
    Some(serde_wasm_bindgen::from_value::<Rtc>(data.clone()).map(|r| Event::Peer(PeerEvent::Page(r))).map_err(|e| e.to_string()))
}

pub fn listen(notify: Rc<dyn Fn(Event)>) -> Option<Listener> {
    let scope = js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>().ok()?;
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        if let Some(event) = peer_news(&e.data()) {
            return event.map_or_else(|why| crate::status::report_error(&format!("idlecore: ignored a peer message: {why}")), |e| notify(e));
        }
        let parsed = serde_wasm_bindgen::from_value::<Control>(e.data()).map_err(|e| e.to_string()).and_then(|c| {
            match c {
                Control::Cpu { cpu } => check_cpu(cpu).map(|()| c),
                c => Ok(c),
            }
        });
        match parsed {
            Ok(c) => notify(Event::Control(c)),
            Err(why) => crate::status::report_error(&format!("idlecore: ignored a control message: {why}")),
        }
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    Some(Listener { scope, _on_message: on_message })
}
