//! The in-memory hot path: ready tasks, leases and worker credit.
//!
//! Sans-IO: every call that changes state takes `now`, and nothing here reads
//! the clock, sends or writes. What the caller must do comes out of
//! [`Scheduler::poll_output`] ([`Output`]: send this message to that worker,
//! void this stored result, this job ended), drained after each call while
//! the caller still holds the scheduler, so store writes keep the order the
//! scheduler decided them in. Durable effects of reports (results, failures)
//! are written by the caller between `begin_finish` and `finish`, so a task
//! is never marked done before its record is on disk. Losing this state in a
//! crash only means re-running leased tasks: the store rebuilds the rest.

use super::model::{JobLimits, TaskInput};
use super::policy::Policy;
use super::quorum::Voter;
pub use super::{LeaseId, WorkerId};
use idlecore_protocol::{Cancel, CoordinatorMessage, FailureKind, Lease, Sha256Hash};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the scheduler decided that the caller must carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this message to the worker's session (a lease, a cancel).
    Send(WorkerId, CoordinatorMessage),
    /// The task's stored record is void: it is being decided again, and its
    /// new record follows. The void must be stored before that new record.
    Void { job: u64, task: u32 },
    /// Every task of the job has its final record and validation is done:
    /// the job is complete, with its final validation figures.
    JobEnded { job: u64, checks: Option<ValidationStats> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Ready,
    Leased(LeaseId),
    Finished,
}

struct Job {
    module: Sha256Hash,
    limits: JobLimits,
    tasks: Vec<Arc<TaskInput>>,
    /// Units are what gets leased: one per task at first, more for the
    /// replicas and spot checks of a validated job. `units[u]` is the task
    /// unit `u` runs; `state` is per unit.
    units: Vec<u32>,
    state: Vec<TaskState>,
    /// Per task: task-caused failures, and whether its final record is stored.
    failures: Vec<u32>,
    done: Vec<bool>,
    finished: u32,
    in_flight: u32,
    cancelled: bool,
    /// Bytes of task inputs held, counted until the job leaves.
    bytes: usize,
    /// Speculative second attempts of leased units (see `attempts.rs`).
    second: HashMap<u32, LeaseId>,
    /// Replicas, votes and spot checks of a validated job (see `validation.rs`).
    checks: Option<Box<validation::JobChecks>>,
    /// Lease-to-report time of finished attempts, for spotting stragglers.
    done_time: Duration,
    done_count: u32,
}

impl Job {
    /// Whether the unit still has to run: its task is undecided, or it is a
    /// spot check (whose task is decided by definition).
    fn wants(&self, unit: u32) -> bool {
        let task = self.units[unit as usize];
        !self.cancelled
            && match &self.checks {
                Some(c) if c.is_spot(unit) => true,
                // A unit its task's open check does not list (a spot check
                // dropped while its task is decided again) is not a replica.
                Some(c) => !self.done[task as usize] && c.open.get(&task).is_some_and(|o| o.units.contains(&unit)),
                None => !self.done[task as usize],
            }
    }
}

struct LeaseInfo {
    job: u64,
    unit: u32,
    worker: WorkerId,
    /// Who the lease was sent to: its result is that worker's vote.
    voter: Voter,
    deadline: Instant,
    started: Instant,
    /// A result or failure for it is being written; it can no longer expire.
    finishing: bool,
}

struct Worker {
    slots: u32,
    voter: Voter,
    leases: HashSet<LeaseId>,
    /// Already in `hungry`: keeps that queue at one entry per worker.
    queued: bool,
}

/// What a worker's report refers to, returned by [`Scheduler::begin_finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finishing {
    pub lease: LeaseId,
    pub job: u64,
    pub task: u32,
    /// Its result is a vote to be counted with `report` before storing.
    pub validated: bool,
    /// A spot check of a task already decided: only its output matters
    /// (a failure ends it with `drop_spot_check`, storing nothing).
    pub spot: bool,
    /// Task-caused failures recorded before this report.
    pub failures: u32,
    pub max_attempts: u32,
}

/// Counts for the dashboard and `/api/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub workers: usize,
    pub slots: u64,
    pub leases: usize,
    pub ready: usize,
    pub running_jobs: usize,
    /// Reports taken from attempts orphaned by a disconnect or expiry.
    pub adopted: u64,
    /// Speculative second attempts given to stragglers.
    pub speculated: u64,
    /// Workers banned for a wrong answer to a spot check.
    pub banned: usize,
    /// Leases workers gave back unrun (paused, budget lowered).
    pub withdrawn: u64,
}

/// Whether a failure is the task's fault (counts against its attempts) or the
/// infrastructure's (retried elsewhere for free).
pub fn counts_against_task(kind: FailureKind) -> bool {
    !FREE_FAILURES.contains(&kind)
}

/// The infrastructure's failures: retried elsewhere without counting.
pub const FREE_FAILURES: [FailureKind; 5] =
    [FailureKind::ModuleFetch, FailureKind::InputFetch, FailureKind::ExecutorCrashed, FailureKind::Internal, FailureKind::Withdrawn];

/// A job as the scheduler takes it.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: u64,
    /// The sandboxed module its tasks run.
    pub module: Sha256Hash,
    pub limits: JobLimits,
    /// How its results are checked.
    pub policy: Policy,
    pub tasks: Vec<TaskInput>,
    /// What the store already holds of it (nothing, for a new job).
    pub restored: Restored,
}

/// What the store holds of a job restored at start-up: per task, whether
/// its final record is stored, and its task-caused failures so far.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub finished: Vec<bool>,
    pub failures: Vec<u32>,
}

/// A key for tests and simulations, derived from `epoch` (the coordinator
/// passes a random one with `with_key`).
fn default_key(epoch: u32) -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&task_seed(epoch as u64, 0x5eed + i as u32).to_le_bytes());
    }
    key
}

/// Derives a task's seed, the same on every attempt so honest runs agree.
pub fn task_seed(job: u64, task: u32) -> u64 {
    let mut z = (job << 32 | task as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub struct Scheduler {
    /// The time of the call being handled (every call that changes state passes it).
    now: Instant,
    /// What the caller must carry out, oldest first (see [`Output`]).
    output: VecDeque<Output>,
    /// Keys lease ids and resume secrets (see `secrets.rs`); the coordinator
    /// draws it at every start, so nothing from before a restart matches.
    key: [u8; 32],
    next_lease: u64,
    next_worker: WorkerId,
    lease_ttl: Duration,
    jobs: BTreeMap<u64, Job>,
    ready: VecDeque<(u64, u32)>,
    /// Spot checks waiting: served before `ready`, so that they run soon
    /// after they are made (they are few: see `validation.rs`).
    spot_ready: VecDeque<(u64, u32)>,
    leases: HashMap<LeaseId, LeaseInfo>,
    workers: HashMap<WorkerId, Worker>,
    /// Workers that may have free slots, in the order they get tasks.
    hungry: VecDeque<WorkerId>,
    /// Attempts whose worker disconnected or stopped heartbeating: their task
    /// went back to the queue, but a result for them is still welcome (from
    /// any session) until the task is finished. Oldest first, bounded.
    orphans: HashMap<LeaseId, Orphan>,
    orphan_order: VecDeque<LeaseId>,
    adopted: u64,
    speculated: u64,
    withdrawn: u64,
    /// Hungry workers that may run none of the ready units (all replicas of
    /// tasks they already run): woken when units are queued.
    starved: Vec<WorkerId>,
    /// Workers caught returning a wrong known answer: never leased to again.
    banned: HashSet<WorkerId>,
    /// Every worker's record of verified results (see `validation.rs`).
    trust: audit::Trust,
}

impl Scheduler {
    pub fn new(epoch: u32, lease_ttl: Duration, now: Instant) -> Scheduler {
        Scheduler {
            now,
            output: VecDeque::new(),
            key: default_key(epoch),
            next_lease: 1,
            next_worker: 1,
            lease_ttl,
            jobs: BTreeMap::new(),
            ready: VecDeque::new(),
            spot_ready: VecDeque::new(),
            leases: HashMap::new(),
            workers: HashMap::new(),
            hungry: VecDeque::new(),
            orphans: HashMap::new(),
            orphan_order: VecDeque::new(),
            adopted: 0,
            speculated: 0,
            withdrawn: 0,
            starved: Vec::new(),
            banned: HashSet::new(),
            trust: audit::Trust::new(task_seed(epoch as u64, 0x7257)),
        }
    }

    /// Keys lease ids and resume secrets with a secret (the coordinator
    /// passes random bytes), and seeds the validator's draws from it.
    pub fn with_key(mut self, key: [u8; 32]) -> Scheduler {
        self.key = key;
        self.trust = audit::Trust::new(task_seed(u64::from_le_bytes(key[..8].try_into().expect("8 of 32 bytes")), 0x7257));
        self
    }

    /// Adds a job with no result validation; tasks marked in `finished` are not run again.
    /// Adds a job; tasks the store already holds records of are not run again.
    pub fn add_job(&mut self, job: NewJob, now: Instant) {
        self.now = now;
        let NewJob { id, module, limits, policy, tasks, restored } = job;
        let Restored { finished, failures } = restored;
        let n = tasks.len();
        let mut done = finished;
        done.resize(n, false);
        let state = done.iter().map(|&d| if d { TaskState::Finished } else { TaskState::Ready }).collect();
        self.ready.extend((0..n).filter(|&i| !done[i]).map(|i| (id, i as u32)));
        let mut failures = failures;
        failures.resize(n, 0);
        let bytes = tasks.iter().map(TaskInput::size).sum();
        self.jobs.insert(
            id,
            Job {
                module,
                limits,
                tasks: tasks.into_iter().map(Arc::new).collect(),
                units: (0..n as u32).collect(),
                state,
                failures,
                finished: done.iter().filter(|d| **d).count() as u32,
                done,
                in_flight: 0,
                cancelled: false,
                bytes,
                second: HashMap::new(),
                checks: policy.is_on().then(|| Box::new(validation::JobChecks::new(policy))),
                done_time: Duration::ZERO,
                done_count: 0,
            },
        );
        self.wake_starved();
        self.pump();
    }

    fn requeue(&mut self, lease: LeaseId) {
        let Some(info) = self.leases.remove(&lease) else {
            return;
        };
        if let Some(w) = self.workers.get_mut(&info.worker) {
            w.leases.remove(&lease);
        }
        self.mark_hungry(info.worker);
        if let Some(job) = self.jobs.get_mut(&info.job) {
            job.in_flight -= 1;
            let unit = info.unit as usize;
            if job.second.get(&info.unit) == Some(&lease) {
                // A speculative attempt ends; the first one runs on.
                job.second.remove(&info.unit);
            } else if job.state[unit] == TaskState::Leased(lease) {
                if let Some(second) = job.second.remove(&info.unit) {
                    // The speculative attempt carries on as the unit's lease.
                    job.state[unit] = TaskState::Leased(second);
                } else if job.checks.as_ref().is_some_and(|c| c.is_aimed(info.unit)) {
                    job.state[unit] = TaskState::Finished;
                    self.aimed_spot_lost(info.job, info.unit);
                } else if job.wants(info.unit) {
                    job.state[unit] = TaskState::Ready;
                    self.ready.push_front((info.job, info.unit));
                    self.wake_starved();
                } else {
                    job.state[unit] = TaskState::Finished;
                }
            }
        }
    }

    /// Claims a lease for a report from `worker`. `None` if the attempt is
    /// not current (stale, cancelled, superseded, or a duplicate) or is not
    /// this worker's: a report is taken only from the worker the lease was
    /// granted to (a reconnected worker proves it is the same one with its
    /// resume secret, see `resume_worker`), and its vote is always its own.
    pub fn begin_finish(&mut self, worker: WorkerId, lease: LeaseId, now: Instant) -> Option<Finishing> {
        self.now = now;
        if !self.leases.contains_key(&lease) {
            return self.adopt(worker, lease);
        }
        let info = self.leases.get(&lease)?;
        if info.finishing || info.worker != worker {
            return None;
        }
        if self.sibling(lease).is_some_and(|s| self.leases.get(&s).is_some_and(|l| l.finishing)) {
            // The task's other attempt is being stored: that one counts, and
            // this one is over.
            self.requeue(lease);
            self.pump();
            return None;
        }
        if self.banned.contains(&worker) {
            // A banned worker's results count for nothing; its task runs elsewhere.
            self.requeue(lease);
            self.pump();
            return None;
        }
        let voter = self.workers.get(&worker).map(|w| w.voter);
        let info = self.leases.get_mut(&lease).expect("checked above");
        // The worker may have resumed from another network since the grant.
        info.voter = voter.unwrap_or(info.voter);
        info.finishing = true;
        let (job_id, unit) = (info.job, info.unit);
        Some(self.finishing(lease, job_id, unit))
    }

    fn finishing(&self, lease: LeaseId, job_id: u64, unit: u32) -> Finishing {
        let job = &self.jobs[&job_id];
        let task = job.units[unit as usize];
        Finishing {
            lease,
            job: job_id,
            task,
            validated: job.checks.is_some(),
            spot: job.checks.as_ref().is_some_and(|c| c.is_spot(unit)),
            failures: job.failures[task as usize],
            max_attempts: job.limits.max_attempts,
        }
    }

    /// The task's final record is stored: mark it finished and free the slot.
    /// Returns true when this finished the whole job.
    pub fn finish(&mut self, lease: LeaseId, now: Instant) -> bool {
        self.now = now;
        let Some((job_id, unit)) = self.close_unit(lease) else {
            return false;
        };
        let mut job_done = false;
        if let Some(job) = self.jobs.get_mut(&job_id) {
            let task = job.units[unit as usize];
            if !job.done[task as usize] {
                job.done[task as usize] = true;
                job.finished += 1;
                self.task_decided(job_id, task);
            }
            job_done = self.close_if_complete(job_id);
        }
        self.pump();
        job_done
    }

    /// Ends a unit whose report is in (cancelling its speculative twin) and
    /// frees the slot; the unit is finished. Returns its job and unit.
    fn close_unit(&mut self, lease: LeaseId) -> Option<(u64, u32)> {
        if let Some(other) = self.sibling(lease) {
            self.cancel_attempt(other);
        }
        let info = self.leases.remove(&lease)?;
        if let Some(w) = self.workers.get_mut(&info.worker) {
            w.leases.remove(&lease);
        }
        self.mark_hungry(info.worker);
        if let Some(job) = self.jobs.get_mut(&info.job) {
            job.in_flight -= 1;
            if job.state[info.unit as usize] != TaskState::Finished {
                job.state[info.unit as usize] = TaskState::Finished;
                job.done_time += self.now.saturating_duration_since(info.started);
                job.done_count += 1;
            }
        }
        Some((info.job, info.unit))
    }

    /// A failure was recorded and the task gets another attempt.
    /// A lease the worker gave back unrun: re-queued for free, and counted.
    pub fn withdrawn(&mut self, lease: LeaseId, now: Instant) {
        self.withdrawn += 1;
        self.retry(lease, false, now);
    }

    pub fn retry(&mut self, lease: LeaseId, counted: bool, now: Instant) {
        self.now = now;
        if let Some(info) = self.leases.get(&lease) {
            if counted {
                if let Some(job) = self.jobs.get_mut(&info.job) {
                    job.failures[job.units[info.unit as usize] as usize] += 1;
                }
            }
        }
        self.requeue(lease);
        self.pump();
    }

    /// Renews the leases a worker says are still running. The worker is
    /// told to stop (one `Cancel` naming them all) every other lease named:
    /// no longer wanted (finished elsewhere, cancelled, superseded), unknown,
    /// or another worker's, so the answer tells nothing of other workers'
    /// leases. Its own runs from before a reconnect (orphaned, see
    /// `attempts.rs`) are left alone while still current.
    pub fn heartbeat(&mut self, worker: WorkerId, leases: &[LeaseId], now: Instant) {
        self.now = now;
        let deadline = now + self.lease_ttl;
        let mut cancel = Vec::new();
        for l in leases {
            if let Some(info) = self.leases.get_mut(l).filter(|info| info.worker == worker) {
                info.deadline = deadline;
            } else if !(self.orphan_of(*l) == Some(worker) && self.orphan_is_current(*l)) {
                cancel.push(*l);
            }
        }
        if !cancel.is_empty() {
            self.output.push_back(Output::Send(worker, CoordinatorMessage::Cancel(Cancel { leases: cancel })));
        }
    }

    /// Requeues leases whose heartbeats stopped, telling their workers to stop.
    /// A report already on its way is still welcome (the attempt is orphaned).
    pub fn expire(&mut self, now: Instant) -> usize {
        self.now = now;
        let expired: Vec<LeaseId> = self.leases.iter().filter(|(_, l)| !l.finishing && l.deadline <= now).map(|(id, _)| *id).collect();
        for lease in &expired {
            self.orphan(*lease);
            self.cancel_attempt(*lease);
        }
        self.pump();
        expired.len()
    }

    /// Stops a job: queued tasks are dropped, running leases cancelled.
    pub fn cancel_job(&mut self, job_id: u64, now: Instant) -> bool {
        self.now = now;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        job.cancelled = true;
        let running: Vec<LeaseId> = self.leases.iter().filter(|(_, l)| l.job == job_id && !l.finishing).map(|(id, _)| *id).collect();
        for lease in running {
            self.cancel_attempt(lease);
        }
        self.ready.retain(|(j, _)| *j != job_id);
        self.spot_ready.retain(|(j, _)| *j != job_id);
        self.drop_job(job_id);
        self.pump();
        true
    }

    /// Forgets a job that finished or was cancelled, with its orphaned attempts.
    fn drop_job(&mut self, job_id: u64) {
        self.jobs.remove(&job_id);
        self.forget_orphans(job_id);
        self.forget_tails_of(job_id);
    }

    /// Unfinished tasks, and bytes of task inputs, of the jobs held in memory.
    pub fn load(&self) -> (usize, usize) {
        let tasks = self.jobs.values().map(|j| j.tasks.len() - j.finished as usize).sum();
        (tasks, self.jobs.values().map(|j| j.bytes).sum())
    }

    /// Tasks of a running job that are leased right now.
    pub fn in_flight(&self, job: u64) -> Option<u32> {
        self.jobs.get(&job).map(|j| j.in_flight)
    }

    /// Limits of a running job.
    pub fn limits(&self, job: u64) -> Option<JobLimits> {
        self.jobs.get(&job).map(|j| j.limits)
    }

    /// The next thing the caller must carry out, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.output.pop_front()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            workers: self.workers.len(),
            slots: self.workers.values().map(|w| w.slots as u64).sum(),
            leases: self.leases.len(),
            ready: self.ready.len() + self.spot_ready.len(),
            running_jobs: self.jobs.len(),
            adopted: self.adopted,
            speculated: self.speculated,
            withdrawn: self.withdrawn,
            banned: self.banned.len(),
        }
    }
}

mod attempts;
use attempts::Orphan;
mod dispatch;
mod secrets;
mod workers;
pub use dispatch::{task_dirs, INPUT_DIR, OUTPUT_DIR};
mod audit;
mod validation;
pub use validation::{Comparison, Outcome, ValidationStats, Vote};

#[cfg(test)]
mod harness;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;

#[cfg(test)]
mod validation_tests;
