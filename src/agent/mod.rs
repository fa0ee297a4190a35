//! The agent: one coordinator session at a time, leases in flight, and where
//! tasks go. Every input (socket, executors, module downloads, timers) becomes
//! an [`Event`] handled one at a time by [`Agent::handle`], so the state needs
//! no locking and every transition is in one place. The handlers are split
//! by concern: `capacity` (CPU budget and the coordinator's credit),
//! `executors` (executor Workers' events), `blobs` (task modules and
//! inputs fetched by hash), `loading` (what waiting leases need, from where),
//! `control` (options and the page's commands), `peers` (blobs to and from
//! other visitors over WebRTC).

pub mod blobs;
mod capacity;
pub mod control;
mod executors;
mod loading;
pub mod peers;

pub use control::{AgentOptions, Control};

use crate::budget::Plan;
use crate::executor::pool::{ExecutorPool, PoolEvent};
use crate::status::{report_status, report_task, Status, TaskEvent};
use crate::transport::{DataChannelSocket, Socket, SocketEvent, WebSocketConn};
use blobs::Kind;
use futures_channel::mpsc;
use futures_util::StreamExt;
use gloo_timers::callback::{Interval, Timeout};
use idlecore_protocol::{
    decode_coordinator, encode_worker, CoordinatorMessage, FailureKind, Heartbeat, Hello, IceServer, Lease, Sha256Hash, TaskFailure,
    WorkerMessage, PROTOCOL_VERSION,
};
use js_sys::{Function, WebAssembly};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use wasm_bindgen::JsValue;

const BACKOFF_START_MS: u32 = 250;
const BACKOFF_MAX_MS: u32 = 30_000;
/// An executor that dies this many times in a row without loading is replaced
/// only after a pause, doubling each time (its script may be unreachable while
/// the coordinator that serves it restarts).
const MAX_CRASHES: u32 = 3;
const REVIVE_START_MS: u32 = 1_000;
const REVIVE_MAX_MS: u32 = 60_000;
/// Status posts to the page are at most one per this (state changes go at
/// once), so a stream of short tasks does not keep the page's thread busy.
const STATUS_INTERVAL_MS: u32 = 250;
/// Unacknowledged reports kept, at most (two of the largest frames).
const MAX_UNACKED_BYTES: usize = 2 * idlecore_protocol::limits::MAX_FRAME_BYTES;

pub enum Event {
    /// Tagged with the socket generation, so events of an old socket are ignored.
    Socket(u32, SocketEvent),
    Pool(PoolEvent),
    /// A module or input is loaded (or could not be).
    Loaded(Sha256Hash, Kind, Result<blobs::Loaded, blobs::BlobError>),
    /// Peer transfers: signals, data channels, timers (see `peers`).
    Peer(peers::PeerEvent),
    Heartbeat,
    /// The pause between status posts is over.
    StatusTick,
    Reconnect,
    /// Try again to start the executor of this slot.
    Revive(usize),
    /// From the page: pause, resume, a new CPU share.
    Control(Control),
}

/// Default byte budget of compiled modules kept by one agent.
const MODULE_CACHE_MIB: u32 = 256;
/// Bytes of task inputs kept by one agent (a lease needing more fails).
const INPUT_BUDGET: usize = 256 * 1024 * 1024;

struct Session {
    socket: Socket,
    generation: u32,
    /// Set once `Welcome` arrived.
    blob_path: Option<String>,
    /// STUN/TURN servers for peer connections, from `Welcome`.
    ice_servers: Vec<IceServer>,
    /// The capacity the coordinator knows (sent in `Hello` or `Capacity`).
    capacity: u32,
    _heartbeat: Option<Interval>,
}

pub struct Agent {
    opts: AgentOptions,
    notify: Rc<dyn Fn(Event)>,
    pool: ExecutorPool,
    session: Option<Session>,
    generation: u32,
    reconnect: Option<Timeout>,
    /// Pending restarts of slots whose executor kept failing to start.
    revivals: HashMap<usize, Timeout>,
    backoff_ms: u32,
    /// Compiled modules, least recently used evicted past the budget.
    modules: crate::lru::Lru<Sha256Hash, WebAssembly::Module>,
    /// Task inputs fetched by hash, least recently used evicted past [`INPUT_BUDGET`].
    inputs: crate::lru::Lru<Sha256Hash, js_sys::Uint8Array>,
    /// Blobs being downloaded (from peers or the coordinator) or compiled.
    loading: std::collections::HashSet<(Sha256Hash, Kind)>,
    peers: peers::Peers,
    waiting: VecDeque<Lease>,
    running: HashMap<u64, (u64, u32)>,
    /// Reports not yet acknowledged, by lease: sent again after the next
    /// Welcome if the connection drops first (the coordinator takes a report
    /// once and acknowledges repeats). Bounded; the oldest go first.
    unacked: VecDeque<(u64, Vec<u8>)>,
    unacked_bytes: usize,
    crashes: Vec<u32>,
    /// Runs started under an earlier session (kept running through a
    /// disconnect); the current session is offered that much less.
    carried: std::collections::HashSet<u64>,
    /// Executors and duty cycle for the CPU share (see `budget`).
    plan: Plan,
    /// Paused by the page (hidden, on battery, `pause()`): no executors, capacity 0.
    paused: bool,
    status: Status,
    /// Set while status posts pause; `status_dirty` if one is owed when it ends.
    status_timer: Option<Timeout>,
    status_dirty: bool,
}

/// Runs an agent until its Worker is terminated.
pub async fn run(opts: AgentOptions, spawn_executor: Function) -> Result<(), JsValue> {
    let (tx, mut rx) = mpsc::unbounded::<Event>();
    let notify: Rc<dyn Fn(Event)> = Rc::new(move |e| {
        let _ = tx.unbounded_send(e);
    });
    let pool_notify = notify.clone();
    let pool = ExecutorPool::new(spawn_executor, Rc::new(move |e| pool_notify(Event::Pool(e))));
    let _control = control::listen(notify.clone());
    let mut agent = Agent {
        status: Status { state: "connecting", coordinator: opts.coordinator.clone(), ..Status::default() },
        crashes: Vec::new(),
        carried: Default::default(),
        plan: opts.plan(),
        paused: opts.paused,
        status_timer: None,
        status_dirty: false,
        notify,
        pool,
        session: None,
        generation: 0,
        reconnect: None,
        revivals: HashMap::new(),
        backoff_ms: BACKOFF_START_MS,
        modules: crate::lru::Lru::new(opts.module_cache_mib.unwrap_or(MODULE_CACHE_MIB) as usize * 1024 * 1024),
        inputs: crate::lru::Lru::new(INPUT_BUDGET),
        loading: Default::default(),
        peers: Default::default(),
        waiting: VecDeque::new(),
        running: HashMap::new(),
        unacked: VecDeque::new(),
        unacked_bytes: 0,
        opts,
    };
    agent.apply_budget();
    while let Some(event) = rx.next().await {
        agent.handle(event);
    }
    Ok(())
}

impl Agent {
    /// The state follows from the session and the pause; set after every change of either.
    fn refresh_state(&mut self) {
        self.status.state = match &self.session {
            Some(s) if s.blob_path.is_some() => {
                if self.active() {
                    "connected"
                } else {
                    "paused"
                }
            }
            Some(_) => "connecting",
            None if !self.active() => "paused",
            None => "disconnected",
        };
        self.post_status();
    }

    /// Opens a session when there is something to do: capacity to offer, or
    /// reports to deliver (a paused agent joins with 0 slots for those).
    fn connect(&mut self) {
        self.reconnect = None;
        if self.capacity() == 0 && self.unacked.is_empty() {
            // `apply_budget` connects once there is.
            self.refresh_state();
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let notify = self.notify.clone();
        let notify: Rc<dyn Fn(SocketEvent)> = Rc::new(move |e| notify(Event::Socket(generation, e)));
        let socket = if self.opts.data_channel {
            DataChannelSocket::connect(&self.opts.coordinator, generation, notify).map(Socket::DataChannel)
        } else {
            WebSocketConn::connect(&self.opts.coordinator, notify).map(Socket::WebSocket)
        };
        match socket {
            Ok(socket) => {
                self.session =
                    Some(Session { socket, generation, blob_path: None, ice_servers: Vec::new(), capacity: 0, _heartbeat: None });
                self.refresh_state();
            }
            Err(e) => self.lost(format!("cannot connect to {}: {e:?}", self.opts.coordinator)),
        }
    }

    /// The session ended: try again after a backoff. Leases not started are
    /// given back (the coordinator re-queues them); running ones run on, and
    /// their reports wait for the next session.
    fn lost(&mut self, why: String) {
        self.end_peers();
        self.session = None;
        self.waiting.clear();
        self.carried = self.running.keys().copied().collect();
        let jitter = 0.5 + js_sys::Math::random() / 2.0;
        let delay = (self.backoff_ms as f64 * jitter) as u32;
        self.backoff_ms = (self.backoff_ms * 2).min(BACKOFF_MAX_MS);
        let notify = self.notify.clone();
        self.reconnect = Some(Timeout::new(delay, move || notify(Event::Reconnect)));
        self.status.last_error = Some(why);
        self.refresh_state();
    }

    /// Posts the status, or owes it until the current pause between posts ends.
    fn publish(&mut self) {
        if self.status_timer.is_some() {
            self.status_dirty = true;
        } else {
            self.post_status();
        }
    }

    fn post_status(&mut self) {
        self.status.running = self.running.len() as u32;
        self.status.queued = self.waiting.len() as u32;
        report_status(&self.status);
        self.status_dirty = false;
        let notify = self.notify.clone();
        self.status_timer = Some(Timeout::new(STATUS_INTERVAL_MS, move || notify(Event::StatusTick)));
    }

    fn send(&mut self, frame: &[u8]) {
        let failed = match &self.session {
            Some(s) => s.socket.send(frame).is_err(),
            None => return,
        };
        self.status.bytes_out += frame.len() as u64;
        if failed {
            self.lost("send failed".into());
        }
    }

    /// Sends a run's report now if connected, and keeps it until acknowledged
    /// (see `unacked`). Dropped reports' tasks simply run again.
    fn report(&mut self, lease: u64, frame: Vec<u8>) {
        self.unacked_bytes += frame.len();
        self.unacked.push_back((lease, frame.clone()));
        while self.unacked_bytes > MAX_UNACKED_BYTES {
            match self.unacked.pop_front() {
                Some((_, old)) => self.unacked_bytes -= old.len(),
                None => break,
            }
        }
        if self.session.as_ref().is_some_and(|s| s.blob_path.is_some()) {
            self.send(&frame);
        }
    }

    fn send_msg(&mut self, msg: &WorkerMessage) {
        self.send(&encode_worker(msg));
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Socket(generation, e) => {
                if self.session.as_ref().map(|s| s.generation) == Some(generation) {
                    self.on_socket(e);
                }
            }
            Event::Pool(e) => self.on_pool(e),
            Event::Loaded(hash, kind, result) => self.on_loaded(hash, kind, result),
            Event::Peer(e) => self.on_peer(e),
            Event::Heartbeat => {
                let leases = self.running.keys().copied().chain(self.waiting.iter().map(|l| l.lease)).collect();
                self.send_msg(&WorkerMessage::Heartbeat(Heartbeat { leases }));
            }
            Event::Reconnect => self.connect(),
            Event::StatusTick => {
                self.status_timer = None;
                if self.status_dirty {
                    self.post_status();
                }
            }
            Event::Revive(i) => {
                self.revivals.remove(&i);
                self.replace_slot(i);
            }
            Event::Control(c) => {
                match c {
                    Control::Pause => self.paused = true,
                    Control::Resume => self.paused = false,
                    Control::Cpu { cpu } => {
                        self.opts.cpu = cpu;
                        self.plan = self.opts.plan();
                    }
                }
                self.apply_budget();
                if !self.active() {
                    self.stop_serving();
                }
            }
        }
    }

    fn on_socket(&mut self, event: SocketEvent) {
        match event {
            SocketEvent::Open => {
                // A change before `Welcome` is sent as `Capacity` after it.
                let slots = self.offered();
                if let Some(s) = &mut self.session {
                    s.capacity = slots;
                }
                let hello = Hello { version: PROTOCOL_VERSION, slots, agent: self.opts.agent.clone() };
                self.send_msg(&WorkerMessage::Hello(hello));
            }
            SocketEvent::Closed { code, reason } => {
                self.lost(format!("connection closed (code {code}{}{reason})", if reason.is_empty() { "" } else { ": " }));
            }
            SocketEvent::Frame(frame) => {
                self.status.bytes_in += frame.len() as u64;
                match decode_coordinator(&frame) {
                    Ok(msg) => self.on_message(msg),
                    Err(e) => self.lost(format!("coordinator sent a bad frame: {e}")),
                }
            }
        }
    }

    fn on_message(&mut self, msg: CoordinatorMessage) {
        match msg {
            CoordinatorMessage::Welcome(w) => {
                let notify = self.notify.clone();
                if let Some(s) = &mut self.session {
                    s.blob_path = Some(w.blob_path);
                    s.ice_servers = w.ice_servers;
                    s._heartbeat = Some(Interval::new(w.heartbeat_ms.max(100), move || notify(Event::Heartbeat)));
                }
                self.backoff_ms = BACKOFF_START_MS;
                self.status.connects += 1;
                self.refresh_state();
                self.tell_capacity();
                self.tell_have(self.modules.keys().chain(self.inputs.keys()).copied().collect(), false);
                let again: Vec<Vec<u8>> = self.unacked.iter().map(|(_, f)| f.clone()).collect();
                for frame in again {
                    self.send(&frame);
                }
            }
            CoordinatorMessage::Lease(lease) => self.take(vec![lease]),
            CoordinatorMessage::Leases(batch) => self.take(batch),
            CoordinatorMessage::Cancel(c) => {
                self.waiting.retain(|l| l.lease != c.lease);
                if let Some(i) = self.pool.slot_of(c.lease) {
                    self.replace_slot(i);
                }
                self.end_run(c.lease);
                self.dispatch();
            }
            CoordinatorMessage::Ack(a) => {
                if let Some(at) = self.unacked.iter().position(|(l, _)| *l == a.lease) {
                    let (_, frame) = self.unacked.remove(at).expect("position is valid");
                    self.unacked_bytes -= frame.len();
                }
            }
            CoordinatorMessage::Error(e) => {
                self.status.last_error = Some(format!("coordinator: {:?}: {}", e.code, e.message));
                self.publish();
            }
            CoordinatorMessage::Signal(s) => self.on_peer_signal(s),
            CoordinatorMessage::Sources(s) => self.on_sources(s),
        }
    }

    /// Queues leases (loading their modules and inputs) and starts what can
    /// start. Leases beyond the capacity (sent before a lower `Capacity`
    /// arrived) go back.
    fn take(&mut self, leases: Vec<Lease>) {
        for lease in leases {
            if self.waiting.len() + self.running.len() >= self.capacity() as usize {
                self.withdraw(lease.lease);
                continue;
            }
            self.waiting.push_back(lease);
        }
        self.dispatch();
    }

    /// Starts waiting leases whose module and inputs are ready on idle executors.
    fn dispatch(&mut self) {
        while let Some(slot) = self.pool.idle_slot() {
            let Some(pos) = self.waiting.iter().position(|l| self.ready(l)) else {
                break;
            };
            let lease = self.waiting.remove(pos).expect("position is valid");
            let module = self.modules.get(&lease.module).expect("checked above").clone();
            let inputs: Vec<js_sys::Uint8Array> = lease.blobs.iter().filter_map(|b| self.inputs.get(&b.hash).cloned()).collect();
            let (id, ids) = (lease.lease, (lease.job, lease.task));
            if let Err(e) = self.pool.start(slot, &module, lease, &inputs) {
                self.fail(id, ids, FailureKind::ExecutorCrashed, format!("{e:?}"));
                self.replace_slot(slot);
                continue;
            }
            self.running.insert(id, ids);
        }
        // Leases that waited behind those may load now; a module evicted
        // meanwhile loads again.
        self.load_waiting();
        self.publish();
    }

    fn fail(&mut self, lease: u64, (job, task): (u64, u32), kind: FailureKind, message: String) {
        self.status.tasks_failed += 1;
        report_task(&TaskEvent { job, task, ok: false, elapsed_ms: 0 });
        self.report(lease, encode_worker(&WorkerMessage::Failure(TaskFailure { lease, kind, message })));
    }
}
