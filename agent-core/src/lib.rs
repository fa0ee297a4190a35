//! The worker agent's logic, once, for every host: the browser worker (an
//! agent Worker and executor Workers) wraps it, and so can a native worker.
//!
//! Sans-IO, as str0m's `Rtc`: the host passes [`Input`]s and the time in
//! ([`Agent::handle`], [`Agent::handle_timeout`]), drains what to do from
//! [`Agent::poll_output`] ([`Output`]: connect, send this frame, start or
//! retire an executor, run this lease, load this blob, report status), and
//! calls again by [`Agent::poll_timeout`]. Nothing here reads a clock, does
//! I/O or knows what a Worker is; `M` (a compiled module) and `I` (an
//! input's bytes) are whatever the host's executors take.
//!
//! What it keeps, by concern: `session` (one coordinator connection at a
//! time, reconnects with backoff and jitter, heartbeats, the credit offered,
//! reports kept until acknowledged and sent again after a reconnect),
//! `leases` (leases waiting and running, cancels, withdrawals, failures),
//! `slots` (executors: which is idle, running, resting for the CPU budget's
//! duty cycle, past its deadline, crashed), `loading` (modules and inputs by
//! hash, the input budget), `budget` (a CPU share as executors and duty
//! cycle), `status` (what the page, or an operator, sees).

pub mod budget;
mod leases;
mod loading;
pub mod lru;
mod session;
mod slots;
pub mod status;

#[cfg(test)]
mod tests;

pub use budget::Plan;
pub use loading::{Blob, Kind, Loaded, Source};
pub use status::{Status, TaskEvent};

use idlecore_protocol::{FailureKind, IceServer, Lease, LeaseId, Sha256Hash, Signal, Sources, WorkerMessage};
use std::collections::{HashMap, HashSet, VecDeque};

/// Milliseconds on the host's monotonic clock (any fixed origin).
pub type Millis = u64;

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The coordinator's worker URL, as the status shows it.
    pub coordinator: String,
    /// Description sent in `Hello`.
    pub agent: String,
    /// Executors and duty cycle for the CPU share given.
    pub plan: Plan,
    /// Cores of the device, to report the share of them in use.
    pub cores: u32,
    /// Leases held queued beyond the running ones (default: one per executor).
    pub prefetch: Option<u32>,
    /// Bytes of compiled modules kept.
    pub module_budget: u64,
    /// Bytes of task inputs kept (a lease needing more fails).
    pub input_budget: u64,
    /// Fetch blobs from peers, and tell the coordinator what this agent holds.
    pub peers: bool,
    /// Start paused.
    pub paused: bool,
    /// Seeds the reconnect jitter.
    pub seed: u64,
}

/// What happened, as the host tells it.
#[derive(Debug)]
pub enum Input<M, I> {
    /// Connection `conn` (see [`Output::Connect`]) is open.
    Opened {
        conn: u32,
    },
    /// Connection `conn` closed, failed to open or failed to send.
    Closed {
        conn: u32,
        why: String,
    },
    /// A frame from the coordinator on connection `conn`.
    Frame {
        conn: u32,
        frame: Vec<u8>,
    },
    /// Executor `id` (see [`Output::Spawn`]) has loaded and can take a run.
    ExecutorReady {
        id: u32,
    },
    /// Executor `id` finished its run: the protocol frame it reports
    /// (`Result` or `Failure`), and how long the run took.
    RunEnded {
        id: u32,
        frame: Vec<u8>,
        ran_ms: Millis,
    },
    /// Executor `id` failed outside a run's outcome (failed to load, threw,
    /// could not be given the run).
    ExecutorFailed {
        id: u32,
        why: String,
    },
    /// Executor `id` could not be started at all (no Workers here).
    SpawnFailed {
        id: u32,
        why: String,
    },
    /// A blob asked for with [`Output::Load`] is here, or cannot be had.
    Loaded {
        hash: Sha256Hash,
        kind: Kind,
        result: Result<Loaded<M, I>, (FailureKind, String)>,
    },
    /// The page (or operator) paused computing, resumed it, or set a new plan.
    Pause,
    Resume,
    Plan(Plan),
}

/// What the host must do, in order.
#[derive(Debug)]
pub enum Output<M, I> {
    /// Open connection `conn` to the coordinator (dropping any other).
    Connect { conn: u32 },
    /// Send this frame on the current connection.
    Send(Vec<u8>),
    /// Start executor `id` in `slot`, ending any executor the slot had.
    Spawn { slot: usize, id: u32 },
    /// End the executor in `slot`; the slot is gone.
    Retire { slot: usize },
    /// Run `lease` on the executor in `slot` with its module and inputs (in
    /// the order the lease names its blobs).
    Run { slot: usize, lease: Lease, module: M, inputs: Vec<I> },
    /// Load a blob by hash: from the host's cache, from peers when
    /// `ask_peers`, else from the coordinator at `blob_path` + hex. `limit`:
    /// the most bytes a peer may send for it.
    Load { hash: Sha256Hash, kind: Kind, limit: u64, blob_path: String, ask_peers: bool },
    /// Signaling from a peer (see `Want` and `Sources`).
    Signal(Signal),
    /// Peers holding a blob this agent asked for with `Want`.
    Sources(Sources),
    /// The session ended: close its connection (if still open). Peer
    /// connections, which need its signaling, end too.
    SessionEnded,
    /// The agent stopped computing: stop serving peers too.
    Inactive,
    /// A task ran or failed here.
    Task(TaskEvent),
    /// The status changed; `now`: a change of state, to show at once.
    Status { now: bool },
    /// The agent cannot go on (no executor can be started here).
    Fatal(String),
}

/// One worker agent (see the crate docs).
pub struct Agent<M, I> {
    cfg: Config,
    paused: bool,
    now: Millis,
    output: VecDeque<Output<M, I>>,
    status: Status,
    session: session::SessionState,
    slots: slots::Slots,
    blobs: loading::Blobs<M, I>,
    /// Leases not started yet, oldest first.
    waiting: VecDeque<Lease>,
    /// Leases running, with their (job, task).
    running: HashMap<LeaseId, (u64, u32)>,
    /// Runs started under an earlier session (kept running through a
    /// disconnect); the current session is offered that much less.
    carried: HashSet<LeaseId>,
}

impl<M: Clone, I: Clone> Agent<M, I> {
    /// A new agent; it connects once it has something to offer.
    pub fn new(cfg: Config, now: Millis) -> Agent<M, I> {
        let mut agent = Agent {
            paused: cfg.paused,
            now,
            output: VecDeque::new(),
            status: Status { state: "connecting", coordinator: cfg.coordinator.clone(), ..Status::default() },
            session: session::SessionState::new(cfg.seed),
            slots: slots::Slots::default(),
            blobs: loading::Blobs::new(cfg.module_budget, cfg.input_budget),
            waiting: VecDeque::new(),
            running: HashMap::new(),
            carried: HashSet::new(),
            cfg,
        };
        agent.apply_budget();
        agent
    }

    /// Handles one input at time `now`.
    pub fn handle(&mut self, input: Input<M, I>, now: Millis) {
        self.now = now;
        match input {
            Input::Opened { conn } if self.session.is_current(conn) => self.on_open(),
            Input::Closed { conn, why } if self.session.is_current(conn) => self.lost(why),
            Input::Frame { conn, frame } if self.session.is_current(conn) => self.on_frame(frame),
            Input::Opened { .. } | Input::Closed { .. } | Input::Frame { .. } => {} // an ended connection's
            Input::ExecutorReady { id } => self.on_ready(id),
            Input::RunEnded { id, frame, ran_ms } => self.on_run_ended(id, frame, ran_ms),
            Input::ExecutorFailed { id, why } => self.on_executor_failed(id, why),
            Input::SpawnFailed { id, why } => self.on_spawn_failed(id, why),
            Input::Loaded { hash, kind, result } => self.on_loaded(hash, kind, result),
            Input::Pause => self.set_active(true, None),
            Input::Resume => self.set_active(false, None),
            Input::Plan(plan) => self.set_active(self.paused, Some(plan)),
        }
    }

    /// Handles what is due at `now`: heartbeats, a reconnect, runs past their
    /// deadline, executors done resting or due to be started again.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = now;
        self.session_timeouts();
        self.slot_timeouts();
    }

    /// When [`Agent::handle_timeout`] is next due, if ever.
    pub fn poll_timeout(&self) -> Option<Millis> {
        [self.session.next_timeout(), self.slots.next_timeout()].into_iter().flatten().min()
    }

    /// The next thing to do, oldest first.
    pub fn poll_output(&mut self) -> Option<Output<M, I>> {
        self.output.pop_front()
    }

    /// What the page sees; the host adds what only it counts (peers, cache).
    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn status_mut(&mut self) -> &mut Status {
        &mut self.status
    }

    /// Marks the status changed (for counts the host keeps in it).
    pub fn publish(&mut self) {
        self.post_status(false);
    }

    /// The session's blob path, once `Welcome` gave it.
    pub fn blob_path(&self) -> Option<&str> {
        self.session.welcomed().map(|w| w.blob_path.as_str())
    }

    /// STUN/TURN servers for peer connections, from `Welcome`.
    pub fn ice_servers(&self) -> &[IceServer] {
        self.session.welcomed().map_or(&[], |w| &w.ice_servers[..])
    }

    /// Reports sent and not yet acknowledged (kept to be sent again).
    pub fn unacknowledged(&self) -> usize {
        self.session.unacked.len()
    }

    /// Whether a session is open or being opened.
    pub fn has_session(&self) -> bool {
        self.session.is_open()
    }

    /// Sends a message on the current connection (the host's peer
    /// messages: `Want`, `Signal`).
    pub fn send(&mut self, msg: &WorkerMessage) {
        self.send_frame(idlecore_protocol::encode_worker(msg));
    }

    /// A task input held in memory (to serve to a peer).
    pub fn input(&mut self, hash: &Sha256Hash) -> Option<&I> {
        self.blobs.inputs.get(hash)
    }

    /// Computing allowed: not paused and a CPU share above zero.
    pub fn active(&self) -> bool {
        !self.paused && self.cfg.plan.workers > 0
    }

    fn set_active(&mut self, paused: bool, plan: Option<Plan>) {
        self.paused = paused;
        if let Some(plan) = plan {
            self.cfg.plan = plan;
        }
        self.apply_budget();
        if !self.active() {
            self.output.push_back(Output::Inactive);
        }
    }

    /// The state follows from the session and the pause; set after every change of either.
    fn refresh_state(&mut self) {
        self.status.state = match (self.session.is_open(), self.session.welcomed().is_some()) {
            (true, true) if self.active() => "connected",
            (true, true) => "paused",
            (true, false) => "connecting",
            (false, _) if !self.active() => "paused",
            (false, _) => "disconnected",
        };
        self.post_status(true);
    }

    fn post_status(&mut self, now: bool) {
        self.status.running = self.running.len() as u32;
        self.status.queued = self.waiting.len() as u32;
        self.output.push_back(Output::Status { now });
    }
}
