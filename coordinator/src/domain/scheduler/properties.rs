//! Property tests of the scheduler as a state machine: random sequences of
//! jobs, workers coming and going, results, failures (counted and free),
//! duplicates, stale and foreign reports, orphaned attempts, heartbeats,
//! expiry, speculative second attempts and cancels; jobs with result
//! validation (replicas, spot checks) and workers that lie about outputs.
//! After every step the scheduler's books must balance, and at the end a
//! fresh worker must be able to finish every job that was not cancelled.

use super::harness::{outbox, Harness, Inbox};
use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    AddJob {
        tasks: u8,
        max_attempts: u8,
        replicas: u8,
        spot: bool,
    },
    AddWorker {
        slots: u8,
        liar: bool,
    },
    SetCapacity {
        pick: u8,
        slots: u8,
    },
    RemoveWorker(u8),
    Complete(u8),
    Fail {
        pick: u8,
        counted: bool,
    },
    Duplicate(u8),
    ReportFromOtherWorker(u8),
    /// A worker that disconnected comes back and reports one of its attempts.
    ReportOrphan {
        pick: u8,
        fail: bool,
    },
    Heartbeat(u8),
    ExpireAll,
    /// Much later: stragglers get second attempts on idle workers.
    SpeculateAll,
    Cancel(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1u8..12, 1u8..4, 0u8..4, any::<bool>())
            .prop_map(|(tasks, max_attempts, replicas, spot)| Op::AddJob { tasks, max_attempts, replicas, spot }),
        1 => (1u8..4, proptest::bool::weighted(0.3)).prop_map(|(slots, liar)| Op::AddWorker { slots, liar }),
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
    rx: Inbox,
    /// Leases this worker was sent and has not reported or been cancelled from.
    holding: Vec<Lease>,
    /// Capacity it asked for last.
    slots: u32,
    /// Leases held when its capacity was last set: lowering it revokes none.
    held_at_capacity_change: usize,
}

/// The test's view: what workers hold, and which tasks were finished how.
struct World {
    s: Harness,
    workers: Vec<TestWorker>,
    next_job: u64,
    jobs: Vec<(u64, u32, bool)>,
    /// (job, task) -> times the scheduler let a report finish it.
    finished: HashMap<(u64, u32), u32>,
    /// Attempts held by workers that were removed, not yet reported.
    /// Attempts of removed workers: the lease, whether its worker lies, and the worker.
    orphans: Vec<(Lease, bool, WorkerId)>,
    /// Workers that report a wrong output (a digest of their own) for every lease.
    liars: HashSet<WorkerId>,
    /// Tasks of validated jobs whose accepted output is a liar's.
    wrong: HashSet<(u64, u32)>,
}

/// The honest output of a task, as a digest.
fn truth(job: u64, task: u32) -> Sha256Hash {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&job.to_le_bytes());
    d[8..12].copy_from_slice(&task.to_le_bytes());
    Sha256Hash(d)
}

impl World {
    fn new() -> World {
        World {
            s: Harness::new(3, Duration::from_secs(60)),
            workers: vec![],
            next_job: 1,
            jobs: vec![],
            finished: HashMap::new(),
            orphans: vec![],
            liars: HashSet::new(),
            wrong: HashSet::new(),
        }
    }

    /// Moves messages the scheduler sent into each worker's holdings.
    fn deliver(&mut self) {
        for w in &mut self.workers {
            while let Ok(m) = w.rx.try_recv() {
                match m {
                    CoordinatorMessage::Lease(l) => w.holding.push(l),
                    CoordinatorMessage::Cancel(c) => w.holding.retain(|l| !c.leases.contains(&l.lease)),
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

    fn add_worker(&mut self, slots: u32, liar: bool) {
        let (tx, rx) = outbox();
        let id = self.s.register_worker(slots, tx);
        if liar {
            self.liars.insert(id);
        }
        self.workers.push(TestWorker { id, rx, holding: vec![], slots, held_at_capacity_change: 0 });
    }

    /// A worker reports on the lease; the store side is what `jobs.rs` does.
    fn report(&mut self, wi: usize, li: usize, failure: Option<bool>) {
        let lease = self.workers[wi].holding.remove(li);
        let Some(f) = self.s.begin_finish(self.workers[wi].id, lease.lease) else { return };
        assert_eq!((f.job, f.task), (lease.job, lease.task), "a claim names the leased task");
        match failure {
            Some(_) if f.spot => self.s.drop_spot_check(f.lease),
            Some(counted) if !(counted && f.failures + 1 >= f.max_attempts) => self.s.retry(f.lease, counted),
            Some(_) => self.accept(f, false),
            None => self.complete(f, self.liars.contains(&self.workers[wi].id)),
        }
    }

    /// A claimed lease's output: the task's true one, or a liar's own.
    fn complete(&mut self, f: Finishing, lie: bool) {
        if !f.validated {
            return self.accept(f, false);
        }
        let mut digest = truth(f.job, f.task);
        if lie {
            digest.0[31] = 1;
            digest.0[8..24].copy_from_slice(&f.lease.to_le_bytes());
        }
        let record = crate::domain::model::ResultRecord {
            task: f.task,
            status: crate::domain::model::TaskStatus::Done,
            exit_code: Some(0),
            stdout: digest.0.to_vec(),
            stderr: vec![],
            elapsed_ms: 0,
            fuel_used: 0,
            files: Default::default(),
            error: None,
        };
        match self.s.report(f.lease, Vote::exact(digest), record) {
            Outcome::Accept(r) => {
                let wrong = r.stdout != truth(f.job, f.task).0;
                self.accept(f, wrong)
            }
            Outcome::Failed(_) => self.accept(f, false),
            Outcome::Counted => self.reopened(),
            Outcome::Recompare(_) => unreachable!("outputs are compared by digest"),
        }
    }

    /// The task's record is stored: the scheduler finishes it.
    fn accept(&mut self, f: Finishing, wrong: bool) {
        *self.finished.entry((f.job, f.task)).or_default() += 1;
        if wrong {
            self.wrong.insert((f.job, f.task));
        }
        self.s.finish(f.lease);
        self.reopened();
    }

    /// Tasks reopened for verification lose their stored record.
    fn reopened(&mut self) {
        for (job, task) in self.s.take_reopened() {
            let n = self.finished.get_mut(&(job, task)).expect("only a finished task is reopened");
            *n -= 1;
            if *n == 0 {
                self.finished.remove(&(job, task));
            }
            self.wrong.remove(&(job, task));
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::AddJob { tasks, max_attempts, replicas, spot } => {
                let id = self.next_job;
                self.next_job += 1;
                let limits = JobLimits { max_attempts: max_attempts as u32, ..JobLimits::default() };
                let inputs = (0..tasks).map(|i| TaskInput { stdin: vec![i], ..TaskInput::default() }).collect();
                let policy = match replicas {
                    0 => Policy::OFF,
                    k => Policy {
                        replicas: k as u32,
                        max_replicas: 4,
                        trust_threshold: 2,
                        spot_checks: if spot { 0.5 } else { 0.0 },
                        comparator: None,
                    },
                };
                self.s.add_validated_job(id, [0; 32], limits, policy, inputs, vec![], vec![]);
                self.jobs.push((id, tasks as u32, false));
            }
            Op::AddWorker { slots, liar } => self.add_worker(slots as u32, liar),
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
                let liar = self.liars.contains(&w.id);
                self.orphans.extend(w.holding.into_iter().map(|l| (l, liar, w.id)));
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
                // Another worker names the lease: refused, whatever it is.
                if let Some((wi, li)) = self.pick(n) {
                    if self.workers.len() > 1 {
                        let wj = (wi + 1 + n as usize % (self.workers.len() - 1)) % self.workers.len();
                        let lease = self.workers[wi].holding[li].lease;
                        assert!(self.s.begin_finish(self.workers[wj].id, lease).is_none(), "a report of another worker's lease is refused");
                    }
                }
            }
            Op::ReportOrphan { pick, fail } if !self.orphans.is_empty() && !self.workers.is_empty() => {
                let (lease, liar, worker) = self.orphans.remove(pick as usize % self.orphans.len());
                let stranger = self.workers[pick as usize % self.workers.len()].id;
                if stranger != worker {
                    assert!(self.s.begin_finish(stranger, lease.lease).is_none(), "an orphan is only its worker's");
                }
                // Its worker resumes (paused, so nothing new is leased to it) and reports.
                let reporter = worker;
                if !self.workers.iter().any(|w| w.id == worker) {
                    let (tx, rx) = outbox();
                    self.s.resume_worker(worker, 0, tx);
                    self.workers.push(TestWorker { id: worker, rx, holding: vec![], slots: 0, held_at_capacity_change: 0 });
                }
                let cancelled = self.jobs.iter().any(|(id, _, c)| *id == lease.job && *c);
                let done = self.finished.contains_key(&(lease.job, lease.task));
                let validated = self.s.validation(lease.job).is_some();
                let claimed = self.s.begin_finish(reporter, lease.lease);
                if !validated {
                    assert_eq!(claimed.is_some(), !cancelled && !done, "an orphaned attempt counts until its task is done");
                }
                if let Some(f) = claimed {
                    if fail && f.spot {
                        self.s.drop_spot_check(f.lease);
                    } else if fail && f.failures + 1 < f.max_attempts {
                        self.s.retry(f.lease, true);
                    } else if fail {
                        self.accept(f, false);
                    } else {
                        self.complete(f, liar);
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
            assert!(sw.leases.len() <= (w.slots as usize).max(w.held_at_capacity_change), "a worker is sent no lease beyond its slots");
            let mut held: Vec<LeaseId> = w.holding.iter().map(|l| l.lease).collect();
            let mut known: Vec<LeaseId> = sw.leases.iter().copied().collect();
            held.sort();
            known.sort();
            assert_eq!(held, known, "the worker holds exactly the leases the scheduler gave it");
        }
        for (lease, info) in &s.leases {
            assert!(s.workers[&info.worker].leases.contains(lease), "every lease belongs to a live worker");
            let job = &s.jobs[&info.job];
            let second = job.second.get(&info.unit);
            let first = match job.state[info.unit as usize] {
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
            let finished = job.done.iter().filter(|d| **d).count() as u32;
            assert_eq!(job.finished, finished);
            for (unit, state) in job.state.iter().enumerate() {
                if *state == TaskState::Ready {
                    let queued = s.ready.contains(&(*id, unit as u32)) || s.spot_ready.contains(&(*id, unit as u32));
                    assert!(queued, "a ready unit is queued");
                }
                if job.checks.is_none() {
                    assert_eq!(*state == TaskState::Finished, job.done[unit], "a task is finished when its one unit is");
                }
            }
            // Replicas of one task run on distinct workers.
            let mut running: Vec<(u32, WorkerId)> = s
                .leases
                .values()
                .filter(|l| l.job == *id && !job.checks.as_ref().is_some_and(|c| c.is_spot(l.unit)))
                .map(|l| (job.units[l.unit as usize], l.voter.worker))
                .collect();
            let n = running.len();
            running.sort();
            running.dedup();
            assert_eq!(running.len(), n, "two live replicas of a task on one worker");
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
        // Enough honest workers for the largest quorum.
        for _ in 0..5 {
            self.add_worker(3, false);
        }
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
        // A cancelled job keeps what it had, verified or not.
        let wrong: Vec<_> = self.wrong.iter().filter(|(j, _)| !self.jobs.iter().any(|(id, _, c)| id == j && *c)).collect();
        assert!(wrong.is_empty(), "a liar's output was accepted: {wrong:?}");
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
