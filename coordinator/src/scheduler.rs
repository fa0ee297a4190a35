//! The in-memory hot path: ready tasks, leases and worker credit.
//!
//! Everything here is synchronous and fast; callers hold the lock only for a
//! call. Durable effects (results, failures, job states) are written by the
//! caller between `begin_finish` and `finish_*`, so a task is never marked
//! done before its record is on disk. Losing this state in a crash only means
//! re-running leased tasks: the store rebuilds the rest.

use crate::model::{JobLimits, TaskInput};
use idlecore_protocol::{Cancel, CoordinatorMessage, FailureKind, Lease, ModuleHash};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

pub type WorkerId = u64;
pub type LeaseId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Ready,
    Leased(LeaseId),
    Finished,
}

struct Job {
    module: ModuleHash,
    limits: JobLimits,
    tasks: Vec<Arc<TaskInput>>,
    state: Vec<TaskState>,
    failures: Vec<u32>,
    finished: u32,
    in_flight: u32,
    cancelled: bool,
    /// Bytes of task inputs held, counted until the job leaves.
    bytes: usize,
    /// Speculative second attempts of leased tasks (see `attempts.rs`).
    second: HashMap<u32, LeaseId>,
    /// Lease-to-report time of finished attempts, for spotting stragglers.
    done_time: Duration,
    done_count: u32,
}

struct LeaseInfo {
    job: u64,
    task: u32,
    worker: WorkerId,
    deadline: Instant,
    started: Instant,
    /// A result or failure for it is being written; it can no longer expire.
    finishing: bool,
}

struct Worker {
    slots: u32,
    leases: HashSet<LeaseId>,
    tx: UnboundedSender<CoordinatorMessage>,
    /// Already in `hungry`: keeps that queue at one entry per worker.
    queued: bool,
}

/// What a worker's report refers to, returned by [`Scheduler::begin_finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finishing {
    pub lease: LeaseId,
    pub job: u64,
    pub task: u32,
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
    /// Leases workers gave back unrun (paused, budget lowered).
    pub withdrawn: u64,
}

/// Whether a failure is the task's fault (counts against its attempts) or the
/// infrastructure's (retried elsewhere for free).
pub fn counts_against_task(kind: FailureKind) -> bool {
    !FREE_FAILURES.contains(&kind)
}

/// The infrastructure's failures: retried elsewhere without counting.
pub const FREE_FAILURES: [FailureKind; 4] =
    [FailureKind::ModuleFetch, FailureKind::ExecutorCrashed, FailureKind::Internal, FailureKind::Withdrawn];

/// Guest path of a task's read-only input files and of its writable output
/// directory: the layout of every task that does not list its own `dirs`.
pub const INPUT_DIR: &str = "/input";
pub const OUTPUT_DIR: &str = "/output";

fn task_dirs(input: &TaskInput) -> Vec<idlecore_protocol::TaskDir> {
    use idlecore_protocol::{TaskDir, TaskFile};
    let files = |m: &crate::model::FileMap| {
        m.0.iter().map(|(path, data)| TaskFile { path: path.clone(), data: data.clone() }).collect()
    };
    if !input.dirs.is_empty() {
        return input.dirs.iter().map(|d| TaskDir { guest: d.guest.clone(), writable: d.writable, files: files(&d.files) }).collect();
    }
    vec![
        TaskDir { guest: INPUT_DIR.into(), writable: false, files: files(&input.files) },
        TaskDir { guest: OUTPUT_DIR.into(), writable: true, files: vec![] },
    ]
}

/// A keyed permutation of 32-bit counters (a four-round Feistel network):
/// lease ids never repeat within an epoch, and cannot be guessed from others.
fn permute(key: u64, counter: u32) -> u32 {
    let (mut l, mut r) = ((counter >> 16) as u16, counter as u16);
    for round in 0..4u64 {
        let f = task_seed(key ^ round, r as u32) as u16;
        (l, r) = (r, l ^ f);
    }
    (l as u32) << 16 | r as u32
}

/// Derives a task's seed, the same on every attempt so honest runs agree.
pub fn task_seed(job: u64, task: u32) -> u64 {
    let mut z = (job << 32 | task as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub struct Scheduler {
    /// High bits of every lease id: differs per coordinator start, so a result
    /// for a lease from before a restart never matches a new lease.
    epoch: u64,
    /// Keys the permutation that makes the low bits unguessable.
    key: u64,
    next_lease: u64,
    next_worker: WorkerId,
    lease_ttl: Duration,
    jobs: BTreeMap<u64, Job>,
    ready: VecDeque<(u64, u32)>,
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
}

impl Scheduler {
    pub fn new(epoch: u32, lease_ttl: Duration) -> Scheduler {
        Scheduler {
            epoch: (epoch as u64) << 32,
            key: task_seed(epoch as u64, 0x5eed),
            next_lease: 1,
            next_worker: 1,
            lease_ttl,
            jobs: BTreeMap::new(),
            ready: VecDeque::new(),
            leases: HashMap::new(),
            workers: HashMap::new(),
            hungry: VecDeque::new(),
            orphans: HashMap::new(),
            orphan_order: VecDeque::new(),
            adopted: 0,
            speculated: 0,
            withdrawn: 0,
        }
    }

    /// Keys lease ids with a secret (the coordinator passes random bytes).
    pub fn with_key(mut self, key: u64) -> Scheduler {
        self.key = key;
        self
    }

    /// Adds a job; tasks marked in `finished` are not run again.
    pub fn add_job(
        &mut self,
        id: u64,
        module: ModuleHash,
        limits: JobLimits,
        tasks: Vec<TaskInput>,
        finished: Vec<bool>,
        failures: Vec<u32>,
    ) {
        let n = tasks.len();
        let mut state = vec![TaskState::Ready; n];
        let mut done = 0;
        for (i, f) in finished.iter().enumerate().take(n) {
            if *f {
                state[i] = TaskState::Finished;
                done += 1;
            } else {
                self.ready.push_back((id, i as u32));
            }
        }
        if finished.len() < n {
            self.ready.extend((finished.len()..n).map(|i| (id, i as u32)));
        }
        let mut failures = failures;
        failures.resize(n, 0);
        let bytes = tasks.iter().map(TaskInput::size).sum();
        self.jobs.insert(
            id,
            Job {
                module,
                limits,
                tasks: tasks.into_iter().map(Arc::new).collect(),
                state,
                failures,
                finished: done,
                in_flight: 0,
                cancelled: false,
                bytes,
                second: HashMap::new(),
                done_time: Duration::ZERO,
                done_count: 0,
            },
        );
        self.pump();
    }

    pub fn register_worker(&mut self, slots: u32, tx: UnboundedSender<CoordinatorMessage>) -> WorkerId {
        let id = self.next_worker;
        self.next_worker += 1;
        self.workers.insert(id, Worker { slots, leases: HashSet::new(), tx, queued: false });
        self.mark_hungry(id);
        self.pump();
        id
    }

    /// The lease is live and held by this worker's session.
    pub fn holds(&self, worker: WorkerId, lease: LeaseId) -> bool {
        self.leases.get(&lease).is_some_and(|l| l.worker == worker)
    }

    /// The worker now takes at most `slots` leases (0: paused). Leases it
    /// holds stay; it gives back what it will not run.
    pub fn set_capacity(&mut self, id: WorkerId, slots: u32) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        w.slots = slots;
        self.mark_hungry(id);
        self.pump();
    }

    /// Forgets a worker; its unfinished leases go back to the front of the queue.
    pub fn remove_worker(&mut self, id: WorkerId) -> usize {
        let Some(w) = self.workers.remove(&id) else { return 0 };
        if w.queued {
            // Idle workers that come and go would otherwise pile up here.
            self.hungry.retain(|h| *h != id);
        }
        let mut requeued = 0;
        for lease in w.leases {
            if self.leases.get(&lease).is_some_and(|l| !l.finishing) {
                self.orphan(lease);
                self.requeue(lease);
                requeued += 1;
            }
        }
        self.pump();
        requeued
    }

    fn requeue(&mut self, lease: LeaseId) {
        let Some(info) = self.leases.remove(&lease) else { return };
        if let Some(w) = self.workers.get_mut(&info.worker) {
            w.leases.remove(&lease);
        }
        self.mark_hungry(info.worker);
        if let Some(job) = self.jobs.get_mut(&info.job) {
            job.in_flight -= 1;
            let task = info.task as usize;
            if job.second.get(&info.task) == Some(&lease) {
                // A speculative attempt ends; the first one runs on.
                job.second.remove(&info.task);
            } else if job.state[task] == TaskState::Leased(lease) {
                if let Some(second) = job.second.remove(&info.task) {
                    // The speculative attempt carries on as the task's lease.
                    job.state[task] = TaskState::Leased(second);
                } else if !job.cancelled {
                    job.state[task] = TaskState::Ready;
                    self.ready.push_front((info.job, info.task));
                }
            }
        }
    }

    fn mark_hungry(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            if !w.queued && (w.leases.len() as u32) < w.slots {
                w.queued = true;
                self.hungry.push_back(id);
            }
        }
    }

    /// Sends a new lease for the task to the worker and books it (the caller
    /// records it in the task's state).
    fn grant(&mut self, wid: WorkerId, job_id: u64, task: u32) -> LeaseId {
        let lease = self.epoch | permute(self.key, self.next_lease as u32) as u64;
        self.next_lease += 1;
        let job = self.jobs.get_mut(&job_id).expect("a granted task's job exists");
        let input = &job.tasks[task as usize];
        let msg = CoordinatorMessage::Lease(Lease {
            lease,
            job: job_id,
            task,
            module: job.module,
            stdin: input.stdin.clone(),
            args: input.args.clone(),
            env: input.env.clone(),
            limits: job.limits.task_limits(),
            seed: task_seed(job_id, task),
            deterministic: job.limits.deterministic,
            dirs: task_dirs(input),
        });
        job.in_flight += 1;
        let now = Instant::now();
        self.leases.insert(
            lease,
            LeaseInfo { job: job_id, task, worker: wid, deadline: now + self.lease_ttl, started: now, finishing: false },
        );
        if let Some(w) = self.workers.get_mut(&wid) {
            w.leases.insert(lease);
            // A closed channel means the session is ending; remove_worker requeues.
            let _ = w.tx.send(msg);
        }
        lease
    }

    /// Hands ready tasks to workers with free slots, round robin.
    pub fn pump(&mut self) {
        while !self.ready.is_empty() {
            let Some(&wid) = self.hungry.front() else { return };
            let Some(w) = self.workers.get_mut(&wid) else {
                self.hungry.pop_front();
                continue;
            };
            if w.leases.len() as u32 >= w.slots {
                w.queued = false;
                self.hungry.pop_front();
                continue;
            }
            let Some((job_id, task)) = self.ready.pop_front() else { return };
            let Some(job) = self.jobs.get_mut(&job_id) else { continue };
            if job.cancelled || job.state[task as usize] != TaskState::Ready {
                continue;
            }
            let lease = self.grant(wid, job_id, task);
            let job = self.jobs.get_mut(&job_id).expect("granted above");
            job.state[task as usize] = TaskState::Leased(lease);
            let w = self.workers.get_mut(&wid).expect("checked above");
            // Rotate so the next task goes to the next hungry worker.
            self.hungry.pop_front();
            w.queued = false;
            self.mark_hungry(wid);
        }
    }

    /// Claims a lease for a report from `worker`. `None` if the attempt is
    /// not current (stale, cancelled, superseded, or a duplicate). A live or
    /// orphaned attempt is current until its task finishes, whichever session
    /// reports it: lease ids are unguessable, so knowing one means having been
    /// sent it.
    pub fn begin_finish(&mut self, worker: WorkerId, lease: LeaseId) -> Option<Finishing> {
        if !self.leases.contains_key(&lease) {
            return self.adopt(worker, lease);
        }
        let info = self.leases.get(&lease)?;
        if info.finishing {
            return None;
        }
        if self.sibling(lease).is_some_and(|s| self.leases.get(&s).is_some_and(|l| l.finishing)) {
            // The task's other attempt is being stored: that one counts, and
            // this one is over.
            self.requeue(lease);
            self.pump();
            return None;
        }
        if info.worker != worker && !self.workers.contains_key(&worker) {
            return None;
        }
        if info.worker != worker {
            // The holder's session has not ended yet, but the lease's report
            // arrives on another one (a worker that reconnected before the
            // coordinator noticed): the attempt moves to the reporting session.
            self.move_lease(lease, worker);
        }
        let info = self.leases.get_mut(&lease).expect("checked above");
        info.finishing = true;
        let job = &self.jobs[&info.job];
        Some(Finishing {
            lease,
            job: info.job,
            task: info.task,
            failures: job.failures[info.task as usize],
            max_attempts: job.limits.max_attempts,
        })
    }

    /// The task's final record is stored: mark it finished and free the slot.
    /// Returns true when this finished the whole job.
    pub fn finish(&mut self, lease: LeaseId) -> bool {
        if let Some(other) = self.sibling(lease) {
            self.cancel_attempt(other);
        }
        let Some(info) = self.leases.remove(&lease) else { return false };
        if let Some(w) = self.workers.get_mut(&info.worker) {
            w.leases.remove(&lease);
        }
        self.mark_hungry(info.worker);
        let mut job_done = false;
        if let Some(job) = self.jobs.get_mut(&info.job) {
            job.in_flight -= 1;
            if job.state[info.task as usize] != TaskState::Finished {
                job.state[info.task as usize] = TaskState::Finished;
                job.finished += 1;
                job.done_time += info.started.elapsed();
                job.done_count += 1;
            }
            job_done = job.finished as usize == job.tasks.len();
            if job_done {
                self.drop_job(info.job);
            }
        }
        self.pump();
        job_done
    }

    /// A failure was recorded and the task gets another attempt.
    /// A lease the worker gave back unrun: re-queued for free, and counted.
    pub fn withdrawn(&mut self, lease: LeaseId) {
        self.withdrawn += 1;
        self.retry(lease, false);
    }

    pub fn retry(&mut self, lease: LeaseId, counted: bool) {
        if let Some(info) = self.leases.get(&lease) {
            if counted {
                if let Some(job) = self.jobs.get_mut(&info.job) {
                    job.failures[info.task as usize] += 1;
                }
            }
        }
        self.requeue(lease);
        self.pump();
    }

    /// Renews the leases a worker says are still running.
    /// Returns the leases named that are no longer wanted (finished elsewhere,
    /// cancelled, superseded): the worker should stop them. Runs it carried
    /// over from an earlier session are left alone while still current.
    pub fn heartbeat(&mut self, worker: WorkerId, leases: &[LeaseId]) -> Vec<LeaseId> {
        let deadline = Instant::now() + self.lease_ttl;
        let mut unwanted = vec![];
        for l in leases {
            if let Some(info) = self.leases.get_mut(l) {
                if info.worker == worker {
                    info.deadline = deadline;
                }
            } else if !self.orphan_is_current(*l) {
                unwanted.push(*l);
            }
        }
        unwanted
    }

    /// Requeues leases whose heartbeats stopped, telling their workers to stop.
    /// A report already on its way is still welcome (the attempt is orphaned).
    pub fn expire(&mut self, now: Instant) -> usize {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| !l.finishing && l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for lease in &expired {
            self.orphan(*lease);
            self.cancel_attempt(*lease);
        }
        self.pump();
        expired.len()
    }

    /// Stops a job: queued tasks are dropped, running leases cancelled.
    pub fn cancel_job(&mut self, job_id: u64) -> bool {
        let Some(job) = self.jobs.get_mut(&job_id) else { return false };
        job.cancelled = true;
        let running: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.job == job_id && !l.finishing)
            .map(|(id, _)| *id)
            .collect();
        for lease in running {
            self.cancel_attempt(lease);
        }
        self.ready.retain(|(j, _)| *j != job_id);
        self.drop_job(job_id);
        self.pump();
        true
    }

    /// Forgets a job that finished or was cancelled, with its orphaned attempts.
    fn drop_job(&mut self, job_id: u64) {
        self.jobs.remove(&job_id);
        self.forget_orphans(job_id);
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

    pub fn stats(&self) -> Stats {
        Stats {
            workers: self.workers.len(),
            slots: self.workers.values().map(|w| w.slots as u64).sum(),
            leases: self.leases.len(),
            ready: self.ready.len(),
            running_jobs: self.jobs.len(),
            adopted: self.adopted,
            speculated: self.speculated,
            withdrawn: self.withdrawn,
        }
    }
}

mod attempts;
use attempts::Orphan;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
