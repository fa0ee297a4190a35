//! What the page tells the agent: its options once (`start(options)`), then
//! control messages (pause, resume, a new CPU share) and its peer
//! connections' news (`cmd: 'rtc'`). Both are read field by field
//! ([`AgentOptions::from_js`], [`parse`]; serde_wasm_bindgen's deserializer
//! and serde's tagged-enum machinery would cost the package several KiB).
//! Bad options stop the agent with an error naming the option; a bad
//! message is reported as an `error` event and ignored.

use idlecore_agent_core::budget::{self, Plan};
use idlecore_protocol::limits::MAX_SLOTS;
use idlecore_protocol::IceServer;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::MessageEvent;

/// The page's commands (`cmd`).
pub mod cmd {
    pub const PAUSE: &str = "pause";
    pub const RESUME: &str = "resume";
    /// `{cmd: 'cpu', cpu}`: a new CPU share.
    pub const CPU: &str = "cpu";
    /// `{cmd: 'rtc', op, peer, ...}`, or `{cmd: 'rtc', peer, channel}`.
    pub const RTC: &str = "rtc";
}

/// Default byte budget of compiled modules kept by one agent, in MiB.
const MODULE_CACHE_MIB: u32 = 256;
/// Bytes of task inputs kept by one agent (a lease needing more fails).
const INPUT_BUDGET: u64 = 256 * 1024 * 1024;

/// Options from `start(options)` as `index.js` passes them to the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `ws://` or `wss://` URL of the coordinator's worker endpoint.
    pub coordinator: String,
    /// Share of the device's cores × time to give, 0 to 1 (default 0.25).
    pub cpu: f64,
    /// Cores of the device (`navigator.hardwareConcurrency`).
    pub cores: Option<u32>,
    /// Most executors at once; default all cores but one.
    pub max_workers: Option<u32>,
    /// Description sent in `Hello`.
    pub agent: String,
    /// Byte budget of compiled modules kept in memory, in MiB.
    pub module_cache_mib: Option<u32>,
    /// Leases to hold queued beyond the running ones, so an executor that
    /// finishes starts its next task without waiting a round trip to the
    /// coordinator. Default: one per executor.
    pub prefetch: Option<u32>,
    /// Start paused (the page is hidden, or `pause()` came first).
    pub paused: bool,
    /// Fetch modules from peers and serve them (default true).
    pub peers: bool,
    /// Reach the coordinator over a WebRTC data channel instead of a
    /// WebSocket (`transport: 'webrtc'`; default `'websocket'`).
    pub data_channel: bool,
}

/// A JS object's fields by name (`null` and `undefined` are absent); each
/// error names the field.
struct Fields<'a>(&'a JsValue);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<JsValue> {
        js_sys::Reflect::get(self.0, &k.into()).ok().filter(|v| !v.is_undefined() && !v.is_null())
    }

    fn text(&self, k: &str) -> Result<Option<String>, String> {
        self.get(k).map(|v| v.as_string().ok_or_else(|| format!("`{k}` must be a string"))).transpose()
    }

    fn need(&self, k: &str) -> Result<String, String> {
        self.text(k)?.ok_or_else(|| format!("`{k}` is missing"))
    }

    fn number(&self, k: &str) -> Result<Option<f64>, String> {
        self.get(k).map(|v| v.as_f64().ok_or_else(|| format!("`{k}` must be a number"))).transpose()
    }

    fn whole(&self, k: &str) -> Result<Option<u32>, String> {
        self.number(k)?
            .map(|n| {
                (n.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&n))
                    .then_some(n as u32)
                    .ok_or_else(|| format!("`{k}` must be a whole number"))
            })
            .transpose()
    }

    fn flag(&self, k: &str) -> Result<Option<bool>, String> {
        self.get(k).map(|v| v.as_bool().ok_or_else(|| format!("`{k}` must be true or false"))).transpose()
    }

    /// Refuses fields other than `known`.
    fn only(&self, known: &[&str]) -> Result<(), String> {
        let keys = js_sys::Object::keys(self.0.unchecked_ref::<js_sys::Object>());
        match keys.iter().filter_map(|k| k.as_string()).find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(format!("unknown field `{k}`")),
            None => Ok(()),
        }
    }
}

impl AgentOptions {
    /// Reads and checks the options `index.js` passes.
    pub fn from_js(value: &JsValue) -> Result<AgentOptions, String> {
        if !value.is_object() {
            return Err("the options must be an object".into());
        }
        let f = Fields(value);
        f.only(&["coordinator", "cpu", "cores", "maxWorkers", "agent", "moduleCacheMib", "prefetch", "paused", "peers", "transport"])?;
        let opts = AgentOptions {
            coordinator: f.need("coordinator")?,
            cpu: f.number("cpu")?.unwrap_or(0.25),
            cores: f.whole("cores")?,
            max_workers: f.whole("maxWorkers")?,
            agent: f.text("agent")?.unwrap_or_default(),
            module_cache_mib: f.whole("moduleCacheMib")?,
            prefetch: f.whole("prefetch")?,
            paused: f.flag("paused")?.unwrap_or(false),
            peers: f.flag("peers")?.unwrap_or(true),
            data_channel: match f.text("transport")?.as_deref() {
                None | Some("websocket") => false,
                Some("webrtc") => true,
                Some(_) => return Err("`transport` must be \"websocket\" or \"webrtc\"".into()),
            },
        };
        opts.validate()?;
        Ok(opts)
    }

    /// Checks URL scheme and ranges. The message names the option.
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

    /// The agent core's settings for these options.
    pub fn core_config(&self, seed: u64) -> idlecore_agent_core::Config {
        idlecore_agent_core::Config {
            coordinator: self.coordinator.clone(),
            agent: self.agent.clone(),
            plan: self.plan(),
            cores: self.cores(),
            prefetch: self.prefetch,
            module_budget: self.module_cache_mib.unwrap_or(MODULE_CACHE_MIB) as u64 * 1024 * 1024,
            input_budget: INPUT_BUDGET,
            peers: self.peers,
            paused: self.paused,
            seed,
        }
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
        Err("`cpu` must be a number from 0 to 1".into())
    }
}

/// A message from the page to a running agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Stop computing within a second: executors end, held leases go back.
    Pause,
    Resume,
    /// A new CPU share, 0 to 1.
    Cpu {
        cpu: f64,
    },
}

/// What the page posts to a running agent.
#[derive(Debug)]
pub enum PageMessage {
    /// `{cmd: 'pause' | 'resume'}`, `{cmd: 'cpu', cpu}`.
    Control(Control),
    /// `{cmd: 'rtc', op, peer, ...}` from the page's peer connections.
    Rtc(Rtc),
    /// `{cmd: 'rtc', peer, channel}`: a connection's data channel (or its relay port).
    Channel(String, JsValue),
}

/// Reads a message from the page; the error says what is wrong.
pub fn parse(data: &JsValue) -> Result<PageMessage, String> {
    if !data.is_object() {
        return Err("not an object".into());
    }
    let f = Fields(data);
    let control = match f.need("cmd")?.as_str() {
        cmd::PAUSE => Control::Pause,
        cmd::RESUME => Control::Resume,
        cmd::CPU => {
            f.only(&["cmd", "cpu"])?;
            let cpu = f.number("cpu")?.ok_or("`cpu` is missing")?;
            check_cpu(cpu)?;
            return Ok(PageMessage::Control(Control::Cpu { cpu }));
        }
        cmd::RTC => {
            let peer = f.need("peer")?;
            if let Some(channel) = f.get("channel") {
                return Ok(PageMessage::Channel(peer, channel));
            }
            return Ok(PageMessage::Rtc(match f.need("op")?.as_str() {
                "offer" => Rtc::Offer { peer, sdp: f.need("sdp")? },
                "answer" => Rtc::Answer { peer, sdp: f.need("sdp")? },
                "candidate" => {
                    let mline = f.whole("mline")?.ok_or("`mline` is missing")?;
                    Rtc::Candidate { peer, candidate: f.need("candidate")?, mid: f.need("mid")?, mline }
                }
                "closed" => Rtc::Closed { peer, why: f.need("why")? },
                other => return Err(format!("unknown op {other:?}")),
            }));
        }
        other => return Err(format!("unknown cmd {other:?}")),
    };
    f.only(&["cmd"])?;
    Ok(PageMessage::Control(control))
}

/// Hands every message the page posts to this Worker to `on` (a bad one is
/// reported to the page and dropped). Listening ends when the listener drops.
pub fn listen(on: impl Fn(PageMessage) + 'static) -> Option<gloo_events::EventListener> {
    let scope = js_sys::global().dyn_into::<web_sys::DedicatedWorkerGlobalScope>().ok()?;
    Some(gloo_events::EventListener::new(&scope, "message", move |e| {
        let Some(e) = e.dyn_ref::<MessageEvent>() else { return };
        match parse(&e.data()) {
            Ok(message) => on(message),
            Err(why) => super::report_error(&format!("idlecore: ignored a message from the page: {why}")),
        }
    }))
}

/// Between the agent and the page's peer connections (`pkg-config/peers.js`;
/// read by [`parse`]). `peer` names one connection:
/// `"{worker}.{n}"` for a peer (its `n`th connection, so late news of an
/// ended one cannot touch the next), `"coordinator.{n}"` for the session's
/// own (see `transport::data_channel`). Strings, as JavaScript numbers cannot hold every u64.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Rtc {
    /// To the page: make a connection (the initiator also makes the channel and the offer).
    Open {
        peer: String,
        ice: Vec<IceServer>,
        initiator: bool,
    },
    Offer {
        peer: String,
        sdp: String,
    },
    Answer {
        peer: String,
        sdp: String,
    },
    Candidate {
        peer: String,
        candidate: String,
        mid: String,
        mline: u32,
    },
    /// To the page: end the connection.
    Close {
        peer: String,
    },
    /// From the page: the connection ended (or could not be made).
    Closed {
        peer: String,
        why: String,
    },
}

impl Rtc {
    pub fn peer(&self) -> &str {
        match self {
            Rtc::Open { peer, .. }
            | Rtc::Offer { peer, .. }
            | Rtc::Answer { peer, .. }
            | Rtc::Candidate { peer, .. }
            | Rtc::Close { peer }
            | Rtc::Closed { peer, .. } => peer,
        }
    }
}
