//! Property tests of the scheduler as a state machine: random sequences of
//! jobs, workers coming and going, results, failures (counted and free),
//! duplicates, stale and foreign reports, orphaned attempts, heartbeats,
//! expiry, speculative second attempts and cancels.
//! After every step the scheduler's books must balance, and at the end a
//! fresh worker must be able to finish every job that was not cancelled.

use super::*;
use proptest::prelude::*;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

#[derive(Debug, Clone)]
enum Op {
    AddJob { tasks: u8, max_attempts: u8 },
    AddWorker { slots: u8 },
    SetCapacity { pick: u8, slots: u8 },
    RemoveWorker(u8),
    Complete(u8),
    Fail { pick: u8, counted: bool },
    Duplicate(u8),
    ReportFromOtherWorker(u8),
    /// A worker that disconnected comes back and reports one of its attempts.
    ReportOrphan { pick: u8, fail: bool },
    Heartbeat(u8),
    ExpireAll,
    /// Much later: stragglers get second attempts on idle workers.
    SpeculateAll,
    Cancel(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1u8..12, 1u8..4).prop_map(|(tasks, max_attempts)| Op::AddJob { tasks, max_attempts }),
        1 => (1u8..4).prop_map(|slots| Op::AddWorker { slots }),
        1 => (any::<u8>(), 0u8..4).prop_map(|(pick, slots)| Op::SetCapacity { pick, slots }),
        1 => any::<u8>().prop_map(Op::RemoveWorker),
        4 => any::<u8>().prop_map(Op::Complete),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(pick, counted)| Op::Fail { pick, counted }),
        1 => any::<u8>().prop_map(Op::Duplicate),
        1 => any::<u8>().prop_map(Op::ReportFromOtherWorker),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(pick, fail)| Op::ReportOrphan { pick, fail }),
        1 => any::<u8>().prop_map(Op::Heartbeat),
        1 => Just(Op::ExpireAll),
        1 => Just(Op::SpeculateAll),
        1 => any::<u8>().prop_map(Op::Cancel),
    ]
}

struct TestWorker {
    id: WorkerId,
    rx: UnboundedReceiver<CoordinatorMessage>,
    /// Leases this worker was sent and has not reported or been cancelled from.
    holding: Vec<Lease>,
    /// Capacity it asked for last.
    slots: u32,
    /// Leases held when its capacity was last set: lowering it revokes none.
    held_at_capacity_change: usize,
}

/// The test's view: what workers hold, and which tasks were finished how.
struct World {
    s: Scheduler,
    workers: Vec<TestWorker>,
    next_job: u64,
    jobs: Vec<(u64, u32, bool)>,
    /// (job, task) -> times the scheduler let a report finish it.
    finished: HashMap<(u64, u32), u32>,
    /// Attempts held by workers that were removed, not yet reported.
    orphans: Vec<Lease>,
}

impl World {
    fn new() -> World {
        World { s: Scheduler::new(3, Duration::from_secs(60)), workers: vec![], next_job: 1, jobs: vec![], finished: HashMap::new(), orphans: vec![] }
    }

    /// Moves messages the scheduler sent into each worker's holdings.
    fn deliver(&mut self) {
        for w in &mut self.workers {
            while let Ok(m) = w.rx.try_recv() {
                match m {
                    CoordinatorMessage::Lease(l) => w.holding.push(l),
                    CoordinatorMessage::Cancel(c) => w.holding.retain(|l| l.lease != c.lease),
                    _ => {}
                }
            }
        }
    }

    fn pick(&self, n: u8) -> Option<(usize, usize)> {
        let all: Vec<(usize, usize)> =
            self.workers.iter().enumerate().flat_map(|(wi, w)| (0..w.holding.len()).map(move |li| (wi, li))).collect();
        (!all.is_empty()).then(|| all[n as usize % all.len()])
    }

    fn add_worker(&mut self, slots: u32) {
        let (tx, rx) = unbounded_channel();
        let id = self.s.register_worker(slots, tx);
        self.workers.push(TestWorker { id, rx, holding: vec![], slots, held_at_capacity_change: 0 });
    }

    /// A worker reports on the lease; the store side is what `jobs.rs` does.
    fn report(&mut self, wi: usize, li: usize, failure: Option<bool>) {
        let lease = self.workers[wi].holding.remove(li);
        let Some(f) = self.s.begin_finish(self.workers[wi].id, lease.lease) else { return };
        assert_eq!((f.job, f.task), (lease.job, lease.task), "a claim names the leased task");
        match failure {
            Some(counted) if !(counted && f.failures + 1 >= f.max_attempts) => self.s.retry(f.lease, counted),
            _ => {
                *self.finished.entry((f.job, f.task)).or_default() += 1;
                self.s.finish(f.lease);
            }
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::AddJob { tasks, max_attempts } => {
                let id = self.next_job;
                self.next_job += 1;
                let limits = JobLimits { max_attempts: max_attempts as u32, ..JobLimits::default() };
                let inputs = (0..tasks).map(|i| TaskInput { stdin: vec![i], ..TaskInput::default() }).collect();
                self.s.add_job(id, [0; 32], limits, inputs, vec![], vec![]);
                self.jobs.push((id, tasks as u32, false));
            }
            Op::AddWorker { slots } => self.add_worker(slots as u32),
            Op::SetCapacity { pick, slots } if !self.workers.is_empty() => {
                let i = pick as usize % self.workers.len();
                let w = &mut self.workers[i];
                w.held_at_capacity_change = w.holding.len();
                w.slots = slots as u32;
                self.s.set_capacity(w.id, slots as u32);
            }
            Op::RemoveWorker(n) if !self.workers.is_empty() => {
                let w = self.workers.remove(n as usize % self.workers.len());
                self.s.remove_worker(w.id);
                self.orphans.extend(w.holding);
            }
            Op::Complete(n) => {
                if let Some((wi, li)) = self.pick(n) {
                    self.report(wi, li, None);
                }
            }
            Op::Fail { pick, counted } => {
                if let Some((wi, li)) = self.pick(pick) {
                    self.report(wi, li, Some(counted));
                }
            }
            Op::Duplicate(n) => {
                if let Some((wi, li)) = self.pick(n) {
                    let (id, lease) = (self.workers[wi].id, self.workers[wi].holding[li].lease);
                    self.report(wi, li, None);
                    assert!(self.s.begin_finish(id, lease).is_none(), "a second report of one lease is refused");
                }
            }
            Op::ReportFromOtherWorker(n) => {
                // The holder reconnected: its report arrives on another session.
                if let Some((wi, li)) = self.pick(n) {
                    if self.workers.len() > 1 {
                        let wj = (wi + 1 + n as usize % (self.workers.len() - 1)) % self.workers.len();
                        let lease = self.workers[wi].holding.remove(li);
                        let f = self.s.begin_finish(self.workers[wj].id, lease.lease);
                        let f = f.expect("a live attempt's report counts from any session");
                        *self.finished.entry((f.job, f.task)).or_default() += 1;
                        self.s.finish(f.lease);
                    }
                }
            }
            Op::ReportOrphan { pick, fail } if !self.orphans.is_empty() && !self.workers.is_empty() => {
                let lease = self.orphans.remove(pick as usize % self.orphans.len());
                let reporter = self.workers[pick as usize % self.workers.len()].id;
                let cancelled = self.jobs.iter().any(|(id, _, c)| *id == lease.job && *c);
                let done = self.finished.contains_key(&(lease.job, lease.task));
                let claimed = self.s.begin_finish(reporter, lease.lease);
                assert_eq!(claimed.is_some(), !cancelled && !done, "an orphaned attempt counts until its task is done");
                if let Some(f) = claimed {
                    if fail && f.failures + 1 < f.max_attempts {
                        self.s.retry(f.lease, true);
                    } else {
                        *self.finished.entry((f.job, f.task)).or_default() += 1;
                        self.s.finish(f.lease);
                    }
                }
            }
            Op::Heartbeat(n) if !self.workers.is_empty() => {
                let w = &self.workers[n as usize % self.workers.len()];
                let leases: Vec<LeaseId> = w.holding.iter().map(|l| l.lease).collect();
                self.s.heartbeat(w.id, &leases);
            }
            Op::ExpireAll => {
                self.s.expire(Instant::now() + Duration::from_secs(3600));
            }
            Op::SpeculateAll => {
                self.s.speculate(Instant::now() + Duration::from_secs(3600));
            }
            Op::Cancel(n) if !self.jobs.is_empty() => {
                let i = n as usize % self.jobs.len();
                self.jobs[i].2 = true;
                self.s.cancel_job(self.jobs[i].0);
            }
            _ => {}
        }
        // Leases given back since a capacity change make room only up to the new capacity.
        for w in &mut self.workers {
            w.held_at_capacity_change = w.held_at_capacity_change.min(w.holding.len());
        }
        self.deliver();
    }

    /// The scheduler's books balance, and agree with what workers hold.
    fn check(&self) {
        let s = &self.s;
        for w in &self.workers {
            let sw = &s.workers[&w.id];
            assert!(
                sw.leases.len() <= (w.slots as usize).max(w.held_at_capacity_change),
                "a worker is sent no lease beyond its slots"
            );
            let mut held: Vec<LeaseId> = w.holding.iter().map(|l| l.lease).collect();
            let mut known: Vec<LeaseId> = sw.leases.iter().copied().collect();
            held.sort();
            known.sort();
            assert_eq!(held, known, "the worker holds exactly the leases the scheduler gave it");
        }
        for (lease, info) in &s.leases {
            assert!(s.workers[&info.worker].leases.contains(lease), "every lease belongs to a live worker");
            let job = &s.jobs[&info.job];
            let second = job.second.get(&info.task);
            let first = match job.state[info.task as usize] {
                TaskState::Leased(l) => l,
                other => panic!("lease {lease} for a task in state {other:?}"),
            };
            assert!(first == *lease || second == Some(lease), "a lease is its task's lease or its second attempt");
            if let Some(second) = second {
                assert_ne!(s.leases[second].worker, s.leases[&first].worker, "a second attempt runs elsewhere");
            }
        }
        for (id, job) in &s.jobs {
            let leased = s.leases.values().filter(|l| l.job == *id).count() as u32;
            assert_eq!(job.in_flight, leased, "in_flight counts the job's leases");
            let finished = job.state.iter().filter(|t| **t == TaskState::Finished).count() as u32;
            assert_eq!(job.finished, finished);
            for (task, state) in job.state.iter().enumerate() {
                if *state == TaskState::Ready {
                    assert!(s.ready.contains(&(*id, task as u32)), "a ready task is queued");
                }
            }
        }
        for h in &s.hungry {
            assert!(s.workers.get(h).is_some_and(|w| w.queued), "the hungry queue holds live, queued workers only");
        }
        let queued = s.workers.values().filter(|w| w.queued).count();
        assert_eq!(queued, s.hungry.len(), "each queued worker is in the hungry queue once");
        let pending: usize = s.jobs.values().map(|j| j.tasks.len() - j.finished as usize).sum();
        let bytes: usize = s.jobs.values().map(|j| j.bytes).sum();
        assert_eq!(s.load(), (pending, bytes), "the admission counters match the jobs held");
        for (&(job, task), &n) in &self.finished {
            assert_eq!(n, 1, "job {job} task {task} was finished {n} times");
        }
    }

    /// A fresh worker with spare slots finishes every job not cancelled.
    fn drain(&mut self) {
        self.add_worker(3);
        self.deliver();
        for _ in 0..10_000 {
            let Some((wi, li)) = self.pick(0) else { break };
            self.report(wi, li, None);
            self.deliver();
            self.check();
        }
        for (id, tasks, cancelled) in &self.jobs {
            if *cancelled {
                continue;
            }
            assert!(!self.s.jobs.contains_key(id), "job {id} did not finish");
            let done = (0..*tasks).filter(|t| self.finished.contains_key(&(*id, *t))).count() as u32;
            assert_eq!(done, *tasks, "every task of job {id} finished exactly once");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn books_balance_and_every_job_finishes(ops in proptest::collection::vec(op(), 1..80)) {
        let mut world = World::new();
        for op in ops {
            world.apply(op);
            world.check();
        }
        world.drain();
    }
}
