//! The scheduler as the unit tests drive it: each call passes the real time
//! (as a coordinator would) and the output it leads to is carried out at
//! once: messages land in the worker's mailbox, voided records and ended
//! jobs are collected for the test to take.

use super::*;
use std::cell::RefCell;
use std::rc::Rc;

/// A worker's mailbox: both ends of one queue (tests keep one, hand one in).
#[derive(Clone, Default)]
pub(super) struct Inbox(Rc<RefCell<VecDeque<CoordinatorMessage>>>);

impl Inbox {
    pub(super) fn try_recv(&mut self) -> Result<CoordinatorMessage, ()> {
        self.0.borrow_mut().pop_front().ok_or(())
    }
}

/// A new mailbox, as (the end given to `register_worker`, the end read).
pub(super) fn outbox() -> (Inbox, Inbox) {
    let b = Inbox::default();
    (b.clone(), b)
}

pub(super) struct Harness {
    s: Scheduler,
    boxes: HashMap<WorkerId, Inbox>,
    reopened: Vec<(u64, u32)>,
    ended: Vec<(u64, Option<ValidationStats>)>,
}

impl std::ops::Deref for Harness {
    type Target = Scheduler;
    fn deref(&self) -> &Scheduler {
        &self.s
    }
}

/// For the tests' direct calls of internals (`ban`, `reopen`...): their
/// output is carried out by the next call through the harness, or `drain`.
impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Scheduler {
        self.drain();
        &mut self.s
    }
}

impl Harness {
    pub(super) fn new(epoch: u32, lease_ttl: Duration) -> Harness {
        Harness { s: Scheduler::new(epoch, lease_ttl, Instant::now()), boxes: HashMap::new(), reopened: vec![], ended: vec![] }
    }

    pub(super) fn with_key(self, key: [u8; 32]) -> Harness {
        Harness { s: self.s.with_key(key), ..self }
    }

    /// Carries out what the scheduler decided.
    pub(super) fn drain(&mut self) {
        while let Some(out) = self.s.poll_output() {
            match out {
                Output::Send(worker, msg) => {
                    if let Some(b) = self.boxes.get(&worker) {
                        b.0.borrow_mut().push_back(msg);
                    }
                }
                Output::Void { job, task } => self.reopened.push((job, task)),
                Output::JobEnded { job, checks } => self.ended.push((job, checks)),
            }
        }
    }

    fn then<T>(&mut self, f: impl FnOnce(&mut Scheduler, Instant) -> T) -> T {
        self.drain();
        let out = f(&mut self.s, Instant::now());
        self.drain();
        out
    }

    pub(super) fn take_reopened(&mut self) -> Vec<(u64, u32)> {
        self.drain();
        std::mem::take(&mut self.reopened)
    }

    pub(super) fn take_ended(&mut self) -> Vec<(u64, Option<ValidationStats>)> {
        self.drain();
        std::mem::take(&mut self.ended)
    }

    pub(super) fn register_worker(&mut self, slots: u32, tx: Inbox) -> WorkerId {
        self.register_worker_from(slots, tx, None)
    }

    pub(super) fn register_worker_from(&mut self, slots: u32, tx: Inbox, origin: Option<u64>) -> WorkerId {
        self.drain();
        let id = self.s.register_worker(slots, origin, Instant::now());
        self.boxes.insert(id, tx);
        self.drain();
        id
    }

    /// Worker `id` reconnected (its secret checked) and goes on with `tx`.
    pub(super) fn resume_worker(&mut self, id: WorkerId, slots: u32, tx: Inbox) {
        self.drain();
        let secret = self.s.resume_secret(id);
        assert_eq!(self.s.resumed_worker(&secret), Some(id));
        self.s.resume_worker(id, slots, None, Instant::now());
        self.boxes.insert(id, tx);
        self.drain();
    }

    pub(super) fn remove_worker(&mut self, id: WorkerId) -> usize {
        let n = self.then(|s, now| s.remove_worker(id, now));
        self.boxes.remove(&id);
        n
    }

    pub(super) fn add_job(
        &mut self,
        id: u64,
        module: [u8; 32],
        limits: JobLimits,
        tasks: Vec<TaskInput>,
        finished: Vec<bool>,
        failures: Vec<u32>,
    ) {
        self.add_validated_job(id, module, limits, Policy::OFF, tasks, finished, failures)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_validated_job(
        &mut self,
        id: u64,
        module: [u8; 32],
        limits: JobLimits,
        policy: Policy,
        tasks: Vec<TaskInput>,
        finished: Vec<bool>,
        failures: Vec<u32>,
    ) {
        let restored = Restored { finished, failures };
        let job = NewJob { id, module: Sha256Hash(module), limits, policy, tasks, restored };
        self.then(|s, now| s.add_job(job, now))
    }

    pub(super) fn begin_finish(&mut self, worker: WorkerId, lease: LeaseId) -> Option<Finishing> {
        self.then(|s, now| s.begin_finish(worker, lease, now))
    }

    pub(super) fn finish(&mut self, lease: LeaseId) -> bool {
        self.then(|s, now| s.finish(lease, now))
    }

    pub(super) fn withdrawn(&mut self, lease: LeaseId) {
        self.then(|s, now| s.withdrawn(lease, now))
    }

    pub(super) fn retry(&mut self, lease: LeaseId, counted: bool) {
        self.then(|s, now| s.retry(lease, counted, now))
    }

    /// The leases named that are no longer wanted (as the `Cancel`s it sent).
    pub(super) fn heartbeat(&mut self, worker: WorkerId, leases: &[LeaseId]) -> Vec<LeaseId> {
        self.drain();
        self.s.heartbeat(worker, leases, Instant::now());
        let mut cancelled = vec![];
        while let Some(out) = self.s.poll_output() {
            match out {
                Output::Send(w, CoordinatorMessage::Cancel(c)) if w == worker => cancelled.extend(c.leases),
                other => panic!("a heartbeat led to {other:?}"),
            }
        }
        cancelled
    }

    pub(super) fn expire(&mut self, now: Instant) -> usize {
        self.then(|s, _| s.expire(now))
    }

    pub(super) fn speculate(&mut self, now: Instant) -> usize {
        self.then(|s, _| s.speculate(now))
    }

    pub(super) fn cancel_job(&mut self, job: u64) -> bool {
        self.then(|s, now| s.cancel_job(job, now))
    }

    pub(super) fn set_capacity(&mut self, id: WorkerId, slots: u32) {
        self.then(|s, now| s.set_capacity(id, slots, now))
    }

    pub(super) fn report(&mut self, lease: LeaseId, vote: Vote, record: crate::domain::model::ResultRecord) -> Outcome {
        self.then(|s, now| s.report(lease, vote, record, now))
    }

    pub(super) fn drop_spot_check(&mut self, lease: LeaseId) {
        self.then(|s, now| s.drop_spot_check(lease, now))
    }
}
