//! What the network edges call: jobs (`jobs`), functions and their calls
//! (`functions`), blobs and modules (`blobs`), comparisons (`comparisons`),
//! the job-owner token (`auth`), over the store
//! and the one [`Hub`] that holds the scheduler, the peer directory and each
//! worker session's outbox.
//!
//! The scheduler and the peer directory are sans-IO: every call into them
//! goes through [`Services::schedule`] or [`Services::peers`], which passes
//! the time in and, before the lock is given up, carries out what they
//! decided: messages go to sessions' outboxes, and store writes (voided
//! records, completed jobs) are queued in the order decided, so each void
//! commits before any new record of its task. What waits on those writes
//! (announcing them to job owners) runs after the lock is released.

pub mod auth;
pub mod blobs;
pub mod comparisons;
pub mod error;
pub mod functions;
pub mod jobs;
mod memory;
pub mod outbox;

pub use error::ServiceError;
pub use memory::return_free_memory;

use crate::domain::model::JobState;
use crate::domain::peers::Peers;
use crate::domain::policy::Policy;
use crate::domain::scheduler::{Output, Scheduler};
use crate::domain::WorkerId;
use crate::sandbox::native::NativeSlots;
use crate::store::{Store, Write};
use idlecore_protocol::ResumeSecret;
use outbox::Outbox;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::broadcast;

/// What the services layer is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Inline inputs (stdin, a file) larger than this are stored as blobs
    /// at job creation and fetched by hash, not sent in every lease.
    pub blob_threshold: usize,
    /// Admission control: unfinished tasks and bytes of task inputs the
    /// coordinator holds in memory at most. Past them, new jobs get 503.
    pub max_pending_tasks: usize,
    pub max_pending_bytes: usize,
    /// Validation of jobs that do not set their own.
    pub validation: Policy,
    /// Function calls waiting for a run, at most.
    pub calls: functions::CallLimits,
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

/// The scheduler and the peer directory, with where their messages go.
pub struct Hub {
    pub scheduler: Scheduler,
    pub peers: Peers,
    outboxes: HashMap<WorkerId, Outbox>,
}

pub struct Services {
    pub store: Store,
    hub: Mutex<Hub>,
    pub events: broadcast::Sender<Event>,
    pub token: auth::TokenHash,
    pub config: Config,
    /// Comparator modules of jobs that have one.
    pub comparators: comparisons::Comparators,
    /// What module and blob downloads cost (the coordinator's egress).
    pub egress: blobs::Egress,
    /// Deployed functions and what runs their calls.
    pub functions: functions::Functions,
}

/// What must happen once the lock is released: announcing voids and ends.
type FollowUp = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Services {
    /// `native`: the coordinator's own slots, which run function calls.
    pub fn new(store: Store, scheduler: Scheduler, token: auth::TokenHash, config: Config, native: Arc<NativeSlots>) -> Services {
        let (events, _) = broadcast::channel(4096);
        let functions = functions::Functions::new(native, config.calls);
        Services {
            store,
            hub: Mutex::new(Hub { scheduler, peers: Peers::default(), outboxes: HashMap::new() }),
            events,
            token,
            config,
            comparators: Default::default(),
            egress: Default::default(),
            functions,
        }
    }

    /// One short synchronous call on the scheduler at the current time; what
    /// it decided is carried out before the lock is released.
    pub fn schedule<R>(&self, f: impl FnOnce(&mut Scheduler, Instant) -> R) -> R {
        self.with_hub(|hub, now| f(&mut hub.scheduler, now))
    }

    /// One short synchronous call on the peer directory, like `schedule`.
    pub fn peers<R>(&self, f: impl FnOnce(&mut Peers, Instant) -> R) -> R {
        self.with_hub(|hub, now| f(&mut hub.peers, now))
    }

    /// A worker session joins with `slots` and its network `origin`; its
    /// leases and signals go to `outbox`. A session presenting a valid
    /// `resume` secret goes on as the worker that was given it (an earlier
    /// session of that worker, if still open, no longer gets messages).
    /// Returns the worker and the secret for its next session.
    pub fn join(&self, slots: u32, origin: Option<u64>, resume: Option<ResumeSecret>, outbox: Outbox) -> (WorkerId, ResumeSecret) {
        self.with_hub(|hub, now| {
            let resumed = resume.and_then(|r| hub.scheduler.resumed_worker(&r));
            let worker = match resumed {
                Some(worker) => {
                    // The directory's state is the old connection's: start afresh.
                    hub.peers.leave(worker);
                    hub.scheduler.resume_worker(worker, slots, origin, now);
                    worker
                }
                None => hub.scheduler.register_worker(slots, origin, now),
            };
            hub.peers.join(worker, origin, now);
            hub.outboxes.insert(worker, outbox);
            (worker, hub.scheduler.resume_secret(worker))
        })
    }

    /// A worker session ended: what it held goes to others. Returns the
    /// leases requeued. Nothing happens if the worker has gone on in a newer
    /// session (`inbox` is then no longer its queue).
    pub fn leave(&self, worker: WorkerId, inbox: &outbox::Inbox) -> usize {
        self.with_hub(|hub, now| {
            if !hub.outboxes.get(&worker).is_some_and(|o| o.feeds(inbox)) {
                return 0;
            }
            hub.peers.leave(worker);
            let requeued = hub.scheduler.remove_worker(worker, now);
            hub.outboxes.remove(&worker);
            requeued
        })
    }

    fn with_hub<R>(&self, f: impl FnOnce(&mut Hub, Instant) -> R) -> R {
        let mut hub = self.lock();
        let result = f(&mut hub, Instant::now());
        let follow_up = self.carry_out(&mut hub);
        drop(hub);
        if let Some(follow_up) = follow_up {
            // Outside a runtime (a synchronous caller) nobody is listening.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(follow_up);
            }
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drains the scheduler's and the directory's output: messages to
    /// outboxes, store writes queued now, in order; the returned future
    /// announces them once they are stored.
    fn carry_out(&self, hub: &mut Hub) -> Option<FollowUp> {
        let mut voids = vec![];
        let mut ends = vec![];
        while let Some(out) = hub.scheduler.poll_output() {
            match out {
                // A session whose outbox is gone is ending; `leave` requeues its leases.
                Output::Send(worker, msg) => {
                    // What a worker is leased it may then offer its peers.
                    if let idlecore_protocol::CoordinatorMessage::Lease(l) = &msg {
                        hub.peers.given(worker, std::iter::once(l.module).chain(l.blobs.iter().map(|b| b.hash)));
                    }
                    if let Some(outbox) = hub.outboxes.get(&worker) {
                        outbox.send(msg);
                    }
                }
                Output::Void { job, task } => voids.push((job, task, self.store.enqueue(Write::VoidResult { job, task }))),
                Output::JobEnded { job, checks } => ends.push(jobs::end_job(self, job, JobState::Completed, checks)),
            }
        }
        while let Some((worker, msg)) = hub.peers.poll_output() {
            if let Some(outbox) = hub.outboxes.get(&worker) {
                outbox.send(msg);
            }
        }
        if voids.is_empty() && ends.is_empty() {
            return None;
        }
        let events = self.events.clone();
        Some(Box::pin(async move {
            for (job, task, write) in voids {
                match write.await {
                    Ok(_) => {
                        tracing::info!(job, task, "accepted result voided: the task is decided again");
                        let _ = events.send(Event::Voided { job, task });
                    }
                    Err(e) => tracing::error!(job, task, error = %e, "could not void a doubtful result"),
                }
            }
            for end in ends {
                end.await;
            }
        }))
    }

    /// Counts for `/api/stats`: the scheduler's and the peer directory's.
    pub fn stats(&self) -> (crate::domain::scheduler::Stats, crate::domain::peers::PeerStats, (usize, usize)) {
        let hub = self.lock();
        (hub.scheduler.stats(), hub.peers.stats, hub.peers.holdings())
    }
}
