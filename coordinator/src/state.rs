//! Shared state of a running coordinator.

use crate::scheduler::Scheduler;
use crate::sessions::Transport;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};

#[derive(Debug, Clone)]
pub struct Config {
    /// How often workers heartbeat; a lease with no heartbeat for three of these expires.
    pub heartbeat_ms: u32,
    pub max_module_bytes: usize,
    pub max_job_bytes: usize,
    /// Largest input blob upload.
    pub max_blob_bytes: usize,
    /// Inline inputs (stdin, a file) larger than this are stored as blobs
    /// at job creation and fetched by hash, not sent in every lease.
    pub blob_threshold: usize,
    /// Admission control: unfinished tasks and bytes of task inputs the
    /// coordinator holds in memory at most. Past them, new jobs get 503.
    pub max_pending_tasks: usize,
    pub max_pending_bytes: usize,
    /// Demo site served at `/`.
    pub www: Option<PathBuf>,
    /// Built browser package served at `/pkg/`.
    pub pkg: Option<PathBuf>,
    /// Validation of jobs that do not set their own.
    pub validation: crate::validate::Policy,
    /// STUN/TURN servers workers use for peer connections.
    pub ice_servers: Vec<idlecore_protocol::IceServer>,
}

/// Something job owners can watch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A task's final record was stored.
    Finished { job: u64, task: u32 },
    /// Every task of the job has a final record, or the job was cancelled.
    JobEnded { job: u64 },
    /// A task's stored record was voided: the task is decided again, and its
    /// new record will follow with `Finished`.
    Voided { job: u64, task: u32 },
}

pub struct AppState {
    pub store: Store,
    scheduler: Mutex<Scheduler>,
    pub events: broadcast::Sender<Event>,
    pub token_hash: [u8; 32],
    pub config: Config,
    /// Flips to true when the coordinator starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Worker sessions still open; shutdown waits for them to say goodbye.
    sessions: AtomicUsize,
    /// Of those, the ones over WebRTC data channels.
    data_channel_sessions: AtomicUsize,
    /// Worker sessions over WebRTC data channels (`--rtc-listen`).
    #[cfg(feature = "webrtc")]
    pub rtc: Option<crate::rtc::RtcHub>,
    /// Module downloads served (`GET /modules/{hash}`), for egress accounting.
    pub module_downloads: std::sync::atomic::AtomicU64,
    /// Blob downloads served (`GET /blobs/{hash}`: inputs and modules), and
    /// the bytes of every module and blob download: the coordinator's egress.
    pub blob_downloads: std::sync::atomic::AtomicU64,
    pub download_bytes: std::sync::atomic::AtomicU64,
    /// Comparator modules of jobs that have one.
    pub comparators: crate::comparators::Comparators,
    /// Who holds which blob, and signaling between workers.
    peers: Mutex<crate::peers::Peers>,
    session_ended: Notify,
}

/// Counts a worker session as open until dropped.
pub struct SessionGuard<'a>(&'a AppState, Transport);

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        if self.1 == Transport::DataChannel {
            self.0.data_channel_sessions.fetch_sub(1, Ordering::SeqCst);
        }
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
        self.0.session_ended.notify_waiters();
    }
}

impl AppState {
    pub fn new(
        store: Store,
        scheduler: Scheduler,
        token_hash: [u8; 32],
        config: Config,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        let (events, _) = broadcast::channel(4096);
        AppState {
            store,
            scheduler: Mutex::new(scheduler),
            events,
            token_hash,
            config,
            shutdown,
            sessions: AtomicUsize::new(0),
            data_channel_sessions: AtomicUsize::new(0),
            #[cfg(feature = "webrtc")]
            rtc: None,
            module_downloads: Default::default(),
            blob_downloads: Default::default(),
            download_bytes: Default::default(),
            comparators: Default::default(),
            peers: Default::default(),
            session_ended: Notify::new(),
        }
    }

    pub fn open_session(&self, transport: Transport) -> SessionGuard<'_> {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        if transport == Transport::DataChannel {
            self.data_channel_sessions.fetch_add(1, Ordering::SeqCst);
        }
        SessionGuard(self, transport)
    }

    /// Worker sessions open now: (over WebSockets, over data channels).
    pub fn sessions_by_transport(&self) -> (usize, usize) {
        let rtc = self.data_channel_sessions.load(Ordering::SeqCst);
        (
            self.sessions.load(Ordering::SeqCst).saturating_sub(rtc),
            rtc,
        )
    }

    /// Waits until every worker session has closed, or `limit` passes.
    pub async fn sessions_closed(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.sessions.load(Ordering::SeqCst) > 0 {
            let ended = self.session_ended.notified();
            if self.sessions.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
    }

    /// The peer directory, locked for one short synchronous call.
    pub fn peers(&self) -> MutexGuard<'_, crate::peers::Peers> {
        self.peers.lock().expect("peers lock poisoned")
    }

    /// The scheduler, locked for one short synchronous call. What the call
    /// decided that the store must follow is queued when the guard drops.
    pub fn scheduler(&self) -> SchedulerGuard<'_> {
        SchedulerGuard {
            guard: self.scheduler.lock().expect("scheduler lock poisoned"),
            state: self,
        }
    }
}

/// The locked scheduler. On release it queues, in order and before the lock
/// is given up, the store writes its calls made necessary: voiding the
/// records of tasks decided again (so each commits before any new record of
/// its task) and marking completed jobs; then it announces them.
pub struct SchedulerGuard<'a> {
    guard: MutexGuard<'a, Scheduler>,
    state: &'a AppState,
}

impl std::ops::Deref for SchedulerGuard<'_> {
    type Target = Scheduler;
    fn deref(&self) -> &Scheduler {
        &self.guard
    }
}

impl std::ops::DerefMut for SchedulerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Scheduler {
        &mut self.guard
    }
}

impl Drop for SchedulerGuard<'_> {
    fn drop(&mut self) {
        use crate::model::JobState;
        use crate::store::Write;
        let (voided, ended) = (self.guard.take_reopened(), self.guard.take_ended());
        if voided.is_empty() && ended.is_empty() {
            return;
        }
        let store = &self.state.store;
        let voids: Vec<_> = voided
            .into_iter()
            .map(|(job, task)| (job, task, store.enqueue(Write::VoidResult { job, task })))
            .collect();
        let ends: Vec<_> = ended
            .into_iter()
            .map(|(job, checks)| crate::jobs::end_job(self.state, job, JobState::Completed, checks))
            .collect();
        let events = self.state.events.clone();
        let announce = async move {
            for (job, task, write) in voids {
                match write.await {
                    Ok(_) => {
                        tracing::info!(
                            job,
                            task,
                            "accepted result voided: the task is decided again"
                        );
                        let _ = events.send(Event::Voided { job, task });
                    }
                    Err(e) => {
                        tracing::error!(job, task, error = %e, "could not void a doubtful result")
                    }
                }
            }
            for end in ends {
                end.await;
            }
        };
        // The writes are queued either way; outside a runtime (tests) nobody listens.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(announce);
        }
    }
}
