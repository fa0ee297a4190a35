//! One coordinator session at a time: opening it when there is something to
//! do, `Hello` and `Welcome`, heartbeats, the credit offered (`Capacity`),
//! reports kept until acknowledged (and sent again after the next
//! `Welcome`), and reconnecting with exponential backoff and jitter.

use crate::{Agent, Millis, Output};
use idlecore_protocol::{
    decode_coordinator, encode_worker, Capacity, CoordinatorMessage, Have, Heartbeat, Hello, IceServer, LeaseId, ResumeSecret, Sha256Hash,
    WorkerMessage, PROTOCOL_VERSION,
};

const BACKOFF_START_MS: u32 = 250;
const BACKOFF_MAX_MS: u32 = 30_000;
/// Heartbeats are sent at most this often, whatever `Welcome` says.
const MIN_HEARTBEAT_MS: u32 = 100;
/// Unacknowledged reports kept, at most (two of the largest frames).
const MAX_UNACKED_BYTES: usize = 2 * idlecore_protocol::limits::MAX_FRAME_BYTES;

/// What `Welcome` told this session.
pub(crate) struct Welcomed {
    pub(crate) blob_path: String,
    pub(crate) ice_servers: Vec<IceServer>,
    heartbeat_ms: u32,
}

/// The current connection.
struct Session {
    conn: u32,
    /// Set once `Welcome` arrived.
    welcomed: Option<Welcomed>,
    /// The capacity the coordinator knows (sent in `Hello` or `Capacity`).
    capacity: u32,
    next_heartbeat: Option<Millis>,
}

pub(crate) struct SessionState {
    session: Option<Session>,
    /// Connections opened so far (each gets the next number).
    conns: u32,
    reconnect_at: Option<Millis>,
    backoff_ms: u32,
    /// xorshift64 state, for the reconnect jitter.
    rng: u64,
    /// Reports not yet acknowledged, by lease: sent again after the next
    /// Welcome if the connection drops first (the coordinator takes a report
    /// once and acknowledges repeats). Bounded; the oldest go first.
    pub(crate) unacked: std::collections::VecDeque<(LeaseId, Vec<u8>)>,
    unacked_bytes: usize,
    /// The last `Welcome`'s secret: the next `Hello` proves with it that this
    /// is the same worker, so that the reports sent again are taken.
    resume: Option<ResumeSecret>,
}

impl SessionState {
    pub(crate) fn new(seed: u64) -> SessionState {
        SessionState {
            session: None,
            conns: 0,
            reconnect_at: None,
            backoff_ms: BACKOFF_START_MS,
            rng: seed | 1,
            unacked: Default::default(),
            unacked_bytes: 0,
            resume: None,
        }
    }

    pub(crate) fn is_current(&self, conn: u32) -> bool {
        self.session.as_ref().is_some_and(|s| s.conn == conn)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.session.is_some()
    }

    pub(crate) fn welcomed(&self) -> Option<&Welcomed> {
        self.session.as_ref().and_then(|s| s.welcomed.as_ref())
    }

    pub(crate) fn next_timeout(&self) -> Option<Millis> {
        [self.reconnect_at, self.session.as_ref().and_then(|s| s.next_heartbeat)].into_iter().flatten().min()
    }

    /// Uniform in [0, 1).
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl<M: Clone, I: Clone> Agent<M, I> {
    /// Leases to hold: the executors there are plus prefetched ones (0 when inactive).
    pub(crate) fn capacity(&self) -> u32 {
        if !self.active() {
            return 0;
        }
        let w = self.slots.len() as u32;
        w.saturating_add(self.cfg.prefetch.unwrap_or(w)).min(idlecore_protocol::limits::MAX_SLOTS)
    }

    /// What this session may be sent: the capacity less the runs carried over
    /// from an earlier session (they hold executors the coordinator does not see).
    pub(crate) fn offered(&self) -> u32 {
        self.capacity().saturating_sub(self.carried.len() as u32)
    }

    /// Opens a session when there is something to do: capacity to offer, or
    /// reports to deliver (a paused agent joins with 0 slots for those).
    pub(crate) fn connect(&mut self) {
        self.session.reconnect_at = None;
        if self.capacity() == 0 && self.session.unacked.is_empty() {
            // `apply_budget` connects once there is.
            self.refresh_state();
            return;
        }
        self.session.conns += 1;
        let conn = self.session.conns;
        self.session.session = Some(Session { conn, welcomed: None, capacity: 0, next_heartbeat: None });
        self.output.push_back(Output::Connect { conn });
        self.refresh_state();
    }

    /// Connects unless a session is open or a reconnect is waiting.
    pub(crate) fn ensure_session(&mut self) {
        if !self.session.is_open() && self.session.reconnect_at.is_none() {
            self.connect();
        }
    }

    /// The session ended: try again after a backoff. Leases not started are
    /// given back (the coordinator re-queues them); running ones run on, and
    /// their reports wait for the next session.
    pub(crate) fn lost(&mut self, why: String) {
        if self.session.session.take().is_some() {
            self.output.push_back(Output::SessionEnded);
        }
        self.waiting.clear();
        self.carried = self.running.keys().copied().collect();
        let jitter = 0.5 + self.session.random() / 2.0;
        let delay = (self.session.backoff_ms as f64 * jitter) as Millis;
        self.session.backoff_ms = (self.session.backoff_ms * 2).min(BACKOFF_MAX_MS);
        self.session.reconnect_at = Some(self.now + delay);
        self.status.last_error = Some(why);
        self.refresh_state();
    }

    pub(crate) fn session_timeouts(&mut self) {
        if self.session.reconnect_at.is_some_and(|at| at <= self.now) {
            self.connect();
        }
        let due = self.session.session.as_ref().and_then(|s| s.next_heartbeat.zip(s.welcomed.as_ref())).filter(|(at, _)| *at <= self.now);
        if let Some((_, w)) = due {
            let next = self.now + w.heartbeat_ms.max(MIN_HEARTBEAT_MS) as Millis;
            let leases = self.running.keys().copied().chain(self.waiting.iter().map(|l| l.lease)).collect();
            self.send_frame(encode_worker(&WorkerMessage::Heartbeat(Heartbeat { leases })));
            if let Some(s) = &mut self.session.session {
                s.next_heartbeat = Some(next);
            }
        }
    }

    pub(crate) fn on_open(&mut self) {
        // A change before `Welcome` is sent as `Capacity` after it.
        let slots = self.offered();
        if let Some(s) = &mut self.session.session {
            s.capacity = slots;
        }
        let hello = Hello { version: PROTOCOL_VERSION, slots, agent: self.cfg.agent.clone(), resume: self.session.resume };
        self.send_frame(encode_worker(&WorkerMessage::Hello(hello)));
    }

    pub(crate) fn on_frame(&mut self, frame: Vec<u8>) {
        self.status.bytes_in += frame.len() as u64;
        match decode_coordinator(&frame) {
            Ok(msg) => self.on_message(msg),
            Err(e) => self.lost(format!("coordinator sent a bad frame: {e}")),
        }
    }

    fn on_message(&mut self, msg: CoordinatorMessage) {
        match msg {
            CoordinatorMessage::Welcome(w) => {
                let next = self.now + w.heartbeat_ms.max(MIN_HEARTBEAT_MS) as Millis;
                self.session.resume = Some(w.resume);
                if let Some(s) = &mut self.session.session {
                    s.welcomed = Some(Welcomed { blob_path: w.blob_path, ice_servers: w.ice_servers, heartbeat_ms: w.heartbeat_ms });
                    s.next_heartbeat = Some(next);
                }
                self.session.backoff_ms = BACKOFF_START_MS;
                self.status.connects += 1;
                self.refresh_state();
                self.tell_capacity();
                let held: Vec<Sha256Hash> = self.blobs.held_all().collect();
                self.tell_have(held, false);
                let again: Vec<Vec<u8>> = self.session.unacked.iter().map(|(_, f)| f.clone()).collect();
                for frame in again {
                    self.send_frame(frame);
                }
            }
            CoordinatorMessage::Lease(lease) => self.take(vec![lease]),
            CoordinatorMessage::Leases(batch) => self.take(batch),
            CoordinatorMessage::Cancel(c) => {
                for lease in c.leases {
                    self.cancel(lease);
                }
            }
            CoordinatorMessage::Ack(a) => {
                if let Some(at) = self.session.unacked.iter().position(|(l, _)| *l == a.lease) {
                    let (_, frame) = self.session.unacked.remove(at).expect("position is valid");
                    self.session.unacked_bytes -= frame.len();
                }
            }
            CoordinatorMessage::Error(e) => {
                self.status.last_error = Some(format!("coordinator: {:?}: {}", e.code, e.message));
                self.post_status(false);
            }
            CoordinatorMessage::Signal(s) => self.output.push_back(Output::Signal(s)),
            CoordinatorMessage::Sources(s) => self.output.push_back(Output::Sources(s)),
        }
    }

    /// Sends a frame on the session's connection (none: nothing to do).
    pub(crate) fn send_frame(&mut self, frame: Vec<u8>) {
        if self.session.is_open() {
            self.status.bytes_out += frame.len() as u64;
            self.output.push_back(Output::Send(frame));
        }
    }

    /// Sends a run's report now if welcomed, and keeps it until acknowledged
    /// (see `unacked`). Dropped reports' tasks simply run again.
    pub(crate) fn report(&mut self, lease: LeaseId, frame: Vec<u8>) {
        let s = &mut self.session;
        s.unacked_bytes += frame.len();
        s.unacked.push_back((lease, frame.clone()));
        while s.unacked_bytes > MAX_UNACKED_BYTES {
            match s.unacked.pop_front() {
                Some((_, old)) => s.unacked_bytes -= old.len(),
                None => break,
            }
        }
        if s.welcomed().is_some() {
            self.send_frame(frame);
        }
    }

    /// Sends `Capacity` if the coordinator's view is out of date.
    pub(crate) fn tell_capacity(&mut self) {
        let offered = self.offered();
        let Some(s) = &mut self.session.session else { return };
        if s.capacity != offered && s.welcomed.is_some() {
            s.capacity = offered;
            self.send_frame(encode_worker(&WorkerMessage::Capacity(Capacity { slots: offered })));
        }
    }

    /// Tells the coordinator which blobs this worker holds (its directory
    /// for peer transfers), in messages of the size it takes.
    pub(crate) fn tell_have(&mut self, blobs: Vec<Sha256Hash>, from_peers: bool) {
        if self.session.welcomed().is_some() && self.cfg.peers {
            for chunk in blobs.chunks(idlecore_protocol::limits::MAX_HAVE_BLOBS) {
                self.send_frame(encode_worker(&WorkerMessage::Have(Have { blobs: chunk.to_vec(), from_peers })));
            }
        }
    }
}
