//! Shared state of a running coordinator.

use crate::scheduler::Scheduler;
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
}

/// Something job owners can watch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A task's final record was stored.
    Finished { job: u64, task: u32 },
    /// Every task of the job has a final record, or the job was cancelled.
    JobEnded { job: u64 },
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
    /// Module downloads served (`GET /modules/{hash}`), for egress accounting.
    pub module_downloads: std::sync::atomic::AtomicU64,
    session_ended: Notify,
}

/// Counts a worker session as open until dropped.
pub struct SessionGuard<'a>(&'a AppState);

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
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
            module_downloads: Default::default(),
            session_ended: Notify::new(),
        }
    }

    pub fn open_session(&self) -> SessionGuard<'_> {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        SessionGuard(self)
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

    /// The scheduler, locked for one short synchronous call.
    pub fn scheduler(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler.lock().expect("scheduler lock poisoned")
    }
}
