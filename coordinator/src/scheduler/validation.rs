//! Result validation as the scheduler applies it: replicas of a task on
//! distinct workers and origins, votes on their output digests, adaptive
//! trust, spot checks against known answers, bans, and verifying again what
//! a worker found wrong had vouched for.
//!
//! A validated task starts with one unit. Granting a unit to a worker that is
//! not trusted (or is, but loses the draw) raises the task's quorum to the
//! job's `replicas` and queues the extra units; each unit's result is a vote
//! (`report`). A task accepted on one worker's word is remembered, and
//! verified again if that worker is later found wrong, or at the job's end
//! if the worker has not been verified since. Known answers (unanimous
//! quorums) are sent out again as spot checks; a wrong one bans the worker
//! and every task it helped accept is verified again.

use super::*;
use crate::model::{ResultRecord, TaskStatus};
use crate::validate::quorum::{Digest, Quorum, Verdict};
use crate::validate::trust::TrustBook;

/// Tasks remembered per worker for verifying again (oldest dropped first).
const MAX_VOUCHES: usize = 4096;
/// Known answers kept per job for spot checks.
const MAX_KNOWN: usize = 256;
/// Below this many known answers, spot checks are made by replicating tasks.
const MIN_KNOWN: usize = 16;

/// What to do with a report, from [`Scheduler::report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task is accepted with this record: store it, then `finish`.
    Accept(ResultRecord),
    /// The replicas never agreed: store this failed record, then `finish`.
    Failed(ResultRecord),
    /// The vote is counted (or the report was a spot check); nothing to
    /// store, and the lease is already closed.
    Counted,
}

/// Per job: what validation cost and found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidationStats {
    /// Outputs received and compared: replicas, spot checks, verifications again.
    pub results: u64,
    /// Tasks accepted on one trusted worker's result.
    pub accepted_alone: u64,
    /// Extra replicas asked for because replicas disagreed.
    pub disagreements: u64,
    /// Tasks failed because their replicas never agreed.
    pub inconclusive: u64,
    pub spot_checks: u64,
    pub spot_failures: u64,
    /// Accepted tasks reopened to be verified again.
    pub reverified: u64,
    /// Workers banned for a wrong known answer of this job.
    pub banned: u64,
}

pub(super) struct JobChecks {
    policy: Policy,
    /// Tasks being decided.
    pub(super) open: HashMap<u32, Check>,
    /// Units that are spot checks: the answer each must give.
    spots: HashMap<u32, Known>,
    /// Tasks accepted on one worker's word: whose, when, and its digest.
    alone: HashMap<u32, (WorkerId, u64, Digest)>,
    /// Answers of unanimous quorums, the source of spot checks.
    known: Vec<Known>,
    stats: ValidationStats,
}

impl JobChecks {
    pub(super) fn new(policy: Policy) -> JobChecks {
        JobChecks {
            policy,
            open: HashMap::new(),
            spots: HashMap::new(),
            alone: HashMap::new(),
            known: Vec::new(),
            stats: ValidationStats::default(),
        }
    }
}

impl JobChecks {
    pub(super) fn is_spot(&self, unit: u32) -> bool {
        self.spots.contains_key(&unit)
    }
}

pub(super) struct Check {
    quorum: Quorum,
    /// Units of this task (each votes at most once).
    units: Vec<u32>,
    /// Workers (and their origins) given a unit of it: never given another.
    granted: Vec<Voter>,
    /// The first output reported with each digest.
    candidates: Vec<(Digest, ResultRecord)>,
}

#[derive(Clone)]
struct Known {
    task: u32,
    digest: Digest,
    /// Who agreed on it: a spot check goes to someone else.
    voters: Vec<Voter>,
}

/// A task a worker's result helped accept.
struct Vouch {
    job: u64,
    task: u32,
    /// Accepted on this worker's result alone.
    alone: bool,
}

/// Every worker's standing, across jobs.
pub(super) struct Trust {
    book: TrustBook<WorkerId>,
    /// When each worker's latest result was verified (a stamp, see `stamp`).
    verified: HashMap<WorkerId, u64>,
    vouched: HashMap<WorkerId, VecDeque<Vouch>>,
    /// Orders acceptances and verifications.
    stamp: u64,
    rng: u64,
    /// Accepted tasks reopened since the caller last asked: their stored
    /// results are void.
    reopened: Vec<(u64, u32)>,
    /// Final stats of validated jobs that ended, until the caller takes them.
    pub(super) ended: HashMap<u64, ValidationStats>,
}

impl Trust {
    pub(super) fn new(seed: u64) -> Trust {
        Trust {
            book: TrustBook::new(),
            verified: HashMap::new(),
            vouched: HashMap::new(),
            stamp: 0,
            rng: seed | 1,
            reopened: Vec::new(),
            ended: HashMap::new(),
        }
    }

    /// Uniform in [0, 1) (xorshift64*: draws need to be unpredictable to
    /// workers, not cryptographic, since lease contents reveal nothing of them).
    fn draw(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next_stamp(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }

    fn vouch(&mut self, who: WorkerId, job: u64, task: u32, alone: bool) {
        let list = self.vouched.entry(who).or_default();
        list.push_back(Vouch { job, task, alone });
        if list.len() > MAX_VOUCHES {
            list.pop_front();
        }
    }

    fn verified(&mut self, who: WorkerId, stamp: u64) {
        self.book.valid(&who);
        self.verified.insert(who, stamp);
    }

    /// A worker's session ended: its record cannot be used again.
    pub(super) fn forget(&mut self, who: WorkerId) {
        self.book.forget(&who);
        self.vouched.remove(&who);
    }
}

fn clash(a: &Voter, b: &Voter) -> bool {
    a.worker == b.worker || (a.origin.is_some() && a.origin == b.origin)
}

impl Scheduler {
    /// Whether the worker may run this unit: not a second replica of a task
    /// for one worker or origin, nor a spot check of its own answer.
    pub(super) fn eligible(&self, wid: WorkerId, job_id: u64, unit: u32) -> bool {
        let Some(w) = self.workers.get(&wid) else { return false };
        let Some(job) = self.jobs.get(&job_id) else { return true };
        let Some(checks) = &job.checks else { return true };
        if let Some(spot) = checks.spots.get(&unit) {
            return !spot.voters.iter().any(|v| clash(v, &w.voter));
        }
        checks.open.get(&job.units[unit as usize]).is_none_or(|c| !c.granted.iter().any(|v| clash(v, &w.voter)))
    }

    /// Books a unit's grant: the task's quorum is raised to the job's replicas
    /// unless the worker is trusted and wins the draw.
    pub(super) fn on_grant(&mut self, job_id: u64, unit: u32, voter: Voter) {
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        let Some(checks) = job.checks.as_deref_mut() else { return };
        if checks.spots.contains_key(&unit) {
            return;
        }
        let task = job.units[unit as usize];
        let policy = checks.policy;
        let check = checks.open.entry(task).or_insert_with(|| Check {
            quorum: Quorum::new(1, policy.max_replicas),
            units: vec![unit],
            granted: vec![],
            candidates: vec![],
        });
        check.granted.push(voter);
        if check.quorum.wanted() >= policy.replicas.max(2) {
            return;
        }
        let u = self.trust.draw();
        let wanted = if check.quorum.wanted() < policy.replicas && self.trust.book.replicate(&voter.worker, policy.trust_threshold, u) {
            policy.replicas
        } else if checks.known.len() < MIN_KNOWN && self.trust.draw() < policy.spot_checks {
            // Too few known answers to spot-check with: this task makes one.
            2
        } else {
            return;
        };
        while check.quorum.wanted() < wanted && check.quorum.want_more() {}
        self.top_up(job_id, task);
    }

    /// Queues units until the task's quorum has as many coming as it wants.
    fn top_up(&mut self, job_id: u64, task: u32) {
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        let Some(check) = job.checks.as_mut().and_then(|c| c.open.get(&task)) else { return };
        let coming = check.units.iter().filter(|u| job.state[**u as usize] != TaskState::Finished).count();
        let missing = (check.quorum.wanted() as usize).saturating_sub(check.quorum.votes() + coming);
        for _ in 0..missing {
            let unit = self.add_unit(job_id, task);
            let job = self.jobs.get_mut(&job_id).expect("unit added");
            job.checks.as_mut().and_then(|c| c.open.get_mut(&task)).expect("open check").units.push(unit);
        }
    }

    /// A new ready unit running `task`, at the front of the queue (so that a
    /// task's replicas finish together and their votes do not pile up).
    fn add_unit(&mut self, job_id: u64, task: u32) -> u32 {
        let job = self.jobs.get_mut(&job_id).expect("unit of a held job");
        let unit = job.units.len() as u32;
        job.units.push(task);
        job.state.push(TaskState::Ready);
        self.ready.push_front((job_id, unit));
        self.wake_starved();
        unit
    }

    /// Counts a claimed report's output (`digest` of its canonical form) as
    /// its worker's vote. For a job without validation, simply `Accept`.
    pub fn report(&mut self, lease: LeaseId, digest: Digest, record: ResultRecord) -> Outcome {
        let Some(info) = self.leases.get(&lease) else { return Outcome::Counted };
        let (job_id, unit, voter) = (info.job, info.unit, info.voter);
        let Some(job) = self.jobs.get_mut(&job_id) else { return Outcome::Accept(record) };
        let task = job.units[unit as usize];
        let Some(checks) = job.checks.as_deref_mut() else { return Outcome::Accept(record) };
        checks.stats.results += 1;
        if let Some(spot) = checks.spots.remove(&unit) {
            checks.stats.spot_checks += 1;
            let passed = spot.digest == digest;
            if !passed {
                checks.stats.spot_failures += 1;
            }
            self.close_unit(lease);
            if passed {
                let stamp = self.trust.next_stamp();
                self.trust.verified(voter.worker, stamp);
            } else {
                tracing::warn!(job = job_id, task, worker = voter.worker, "wrong answer to a spot check: worker banned");
                self.ban(job_id, voter.worker);
            }
            self.pump();
            return Outcome::Counted;
        }
        if job.done[task as usize] {
            // Decided while this report was on its way.
            self.close_unit(lease);
            self.pump();
            return Outcome::Counted;
        }
        let policy = checks.policy;
        let check = checks.open.entry(task).or_insert_with(|| Check {
            quorum: Quorum::new(1, policy.max_replicas),
            units: vec![unit],
            granted: vec![voter],
            candidates: vec![],
        });
        if !check.candidates.iter().any(|(d, _)| *d == digest) {
            check.candidates.push((digest, record));
        }
        let before = check.quorum.wanted();
        match check.quorum.vote(voter, digest) {
            Verdict::Pending { wanted } => {
                if wanted > before {
                    checks.stats.disagreements += 1;
                }
                self.close_unit(lease);
                self.top_up(job_id, task);
                self.pump();
                Outcome::Counted
            }
            Verdict::Accepted { digest, agreeing, dissenting } => {
                let record = check.candidates.iter().find(|(d, _)| *d == digest).map(|(_, r)| r.clone()).expect("a winner's output");
                self.settle(job_id, task, digest, agreeing, dissenting);
                Outcome::Accept(record)
            }
            Verdict::Inconclusive => {
                checks.stats.inconclusive += 1;
                let outputs = check.candidates.len();
                Outcome::Failed(ResultRecord {
                    task,
                    status: TaskStatus::Failed,
                    exit_code: None,
                    stdout: vec![],
                    stderr: vec![],
                    elapsed_ms: 0,
                    fuel_used: 0,
                    files: Default::default(),
                    error: Some(format!(
                        "no quorum: {} results with {outputs} different outputs, none from a majority",
                        check.quorum.votes()
                    )),
                })
            }
        }
    }

    /// Updates trust for an accepted task: agreeing workers of a replicated
    /// quorum are verified, dissenters lose their record (and what they
    /// accepted alone is verified again); a lone result is remembered.
    fn settle(&mut self, job_id: u64, task: u32, digest: Digest, agreeing: Vec<Voter>, dissenting: Vec<Voter>) {
        let stamp = self.trust.next_stamp();
        let job = self.jobs.get_mut(&job_id).expect("settled job is held");
        let checks = job.checks.as_deref_mut().expect("validated job");
        if agreeing.len() >= 2 {
            for a in &agreeing {
                self.trust.verified(a.worker, stamp);
                self.trust.vouch(a.worker, job_id, task, false);
            }
            if dissenting.is_empty() {
                let known = Known { task, digest, voters: agreeing };
                if checks.known.len() < MAX_KNOWN {
                    checks.known.push(known);
                } else {
                    let i = (self.trust.draw() * MAX_KNOWN as f64) as usize;
                    checks.known[i] = known;
                }
            }
        } else if let Some(a) = agreeing.first() {
            checks.alone.insert(task, (a.worker, stamp, digest));
            checks.stats.accepted_alone += 1;
            self.trust.vouch(a.worker, job_id, task, true);
        }
        if !checks.known.is_empty() && self.trust.draw() < checks.policy.spot_checks {
            let i = (self.trust.draw() * checks.known.len() as f64) as usize;
            let spot = checks.known[i.min(checks.known.len() - 1)].clone();
            let unit = self.add_unit(job_id, spot.task);
            let job = self.jobs.get_mut(&job_id).expect("held");
            job.checks.as_deref_mut().expect("validated").spots.insert(unit, spot);
        }
        for d in dissenting {
            tracing::info!(job = job_id, task, worker = d.worker, "result outvoted: worker's record reset");
            self.trust.book.invalid(&d.worker);
            self.reverify(d.worker, true);
        }
    }

    /// Bans a worker: its live leases go to others, its results count no
    /// more, and every task it helped accept is verified again.
    pub(super) fn ban(&mut self, job_id: u64, worker: WorkerId) {
        if !self.banned.insert(worker) {
            return;
        }
        if let Some(checks) = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()) {
            checks.stats.banned += 1;
        }
        self.trust.book.invalid(&worker);
        let live: Vec<LeaseId> =
            self.leases.iter().filter(|(_, l)| l.voter.worker == worker && !l.finishing).map(|(id, _)| *id).collect();
        for lease in live {
            self.cancel_attempt(lease);
        }
        // Votes it cast on tasks still being decided no longer count.
        let jobs: Vec<u64> = self.jobs.keys().copied().collect();
        for id in jobs {
            let Some(checks) = self.jobs.get_mut(&id).and_then(|j| j.checks.as_deref_mut()) else { continue };
            let struck: Vec<u32> =
                checks.open.iter_mut().filter_map(|(t, c)| (c.quorum.strike(worker) > 0).then_some(*t)).collect();
            for task in struck {
                self.top_up(id, task);
            }
        }
        self.reverify(worker, false);
    }

    /// Reopens the tasks `worker` helped accept (only those it accepted
    /// alone, if `alone_only`) in jobs still held, each to be decided again
    /// by a fresh quorum without it.
    fn reverify(&mut self, worker: WorkerId, alone_only: bool) {
        let Some(vouches) = self.trust.vouched.remove(&worker) else { return };
        let mut kept = VecDeque::new();
        for v in vouches {
            if alone_only && !v.alone {
                kept.push_back(v);
                continue;
            }
            self.reopen(v.job, v.task, worker, None);
        }
        if !kept.is_empty() {
            self.trust.vouched.insert(worker, kept);
        }
    }

    /// Makes an accepted task undecided again, to be voted on by workers
    /// other than `suspect`; `vote` is the suspect's digest where it still
    /// counts (a result merely not verified yet, rather than one of a worker
    /// found wrong). Its stored result is void (see `take_reopened`).
    fn reopen(&mut self, job_id: u64, task: u32, suspect: WorkerId, vote: Option<Digest>) {
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        let Some(checks) = job.checks.as_deref_mut() else { return };
        if job.cancelled || !job.done[task as usize] {
            return;
        }
        job.done[task as usize] = false;
        job.finished -= 1;
        checks.alone.remove(&task);
        checks.known.retain(|k| k.task != task);
        checks.stats.reverified += 1;
        let k = checks.policy.reverify_replicas();
        let suspect = Voter { worker: suspect, origin: None };
        let mut quorum = Quorum::new(k, checks.policy.max_replicas);
        if let Some(digest) = vote {
            quorum.vote(suspect, digest);
        }
        checks.open.insert(task, Check { quorum, units: vec![], granted: vec![suspect], candidates: vec![] });
        self.trust.reopened.push((job_id, task));
        self.top_up(job_id, task);
    }

    /// The task's record is stored: its other units stop, its check closes.
    pub(super) fn task_decided(&mut self, job_id: u64, task: u32) {
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        let Some(check) = job.checks.as_mut().and_then(|c| c.open.remove(&task)) else { return };
        for unit in check.units {
            let job = self.jobs.get_mut(&job_id).expect("held");
            match job.state[unit as usize] {
                TaskState::Leased(lease) => {
                    // The speculative attempt first, so the lease's end does not promote it.
                    if let Some(second) = job.second.get(&unit).copied() {
                        self.cancel_attempt(second);
                    }
                    if self.leases.get(&lease).is_some_and(|l| !l.finishing) {
                        self.cancel_attempt(lease);
                    }
                }
                TaskState::Ready => job.state[unit as usize] = TaskState::Finished,
                TaskState::Finished => {}
            }
        }
    }

    /// Whether every task of the job has its record. A validated job first
    /// verifies again the tasks accepted alone from workers not verified
    /// since; a completed one stops its outstanding spot checks.
    pub(super) fn completed(&mut self, job_id: u64) -> bool {
        let Some(job) = self.jobs.get(&job_id) else { return false };
        if (job.finished as usize) < job.tasks.len() {
            return false;
        }
        let Some(checks) = &job.checks else { return true };
        let unvouched: Vec<(u32, WorkerId, Option<Digest>)> = checks
            .alone
            .iter()
            .filter(|(_, (w, stamp, _))| self.banned.contains(w) || self.trust.verified.get(w).is_none_or(|v| v < stamp))
            .map(|(t, (w, _, d))| (*t, *w, (!self.banned.contains(w)).then_some(*d)))
            .collect();
        for (task, worker, vote) in &unvouched {
            self.reopen(job_id, *task, *worker, *vote);
        }
        if !unvouched.is_empty() {
            return false;
        }
        let live: Vec<LeaseId> = self.leases.iter().filter(|(_, l)| l.job == job_id).map(|(id, _)| *id).collect();
        for lease in live {
            self.cancel_attempt(lease);
        }
        if let Some(checks) = &self.jobs[&job_id].checks {
            self.trust.ended.insert(job_id, checks.stats);
        }
        true
    }

    /// A spot check ended in a failure rather than an output: it proves
    /// nothing either way and is dropped (the task's record stays).
    pub fn drop_spot_check(&mut self, lease: LeaseId) {
        let Some(info) = self.leases.get(&lease) else { return };
        if let Some(c) = self.jobs.get_mut(&info.job).and_then(|j| j.checks.as_deref_mut()) {
            c.spots.remove(&info.unit);
        }
        self.close_unit(lease);
        self.pump();
    }

    /// Accepted tasks reopened since the last call: delete their stored results.
    pub fn take_reopened(&mut self) -> Vec<(u64, u32)> {
        std::mem::take(&mut self.trust.reopened)
    }

    /// A running job's validation policy and figures so far.
    pub fn validation(&self, job: u64) -> Option<(Policy, ValidationStats)> {
        self.jobs.get(&job).and_then(|j| j.checks.as_ref()).map(|c| (c.policy, c.stats))
    }

    /// Final figures of a validated job that just completed (taken once, to store).
    pub fn take_final_stats(&mut self, job: u64) -> Option<ValidationStats> {
        self.trust.ended.remove(&job)
    }

    /// A worker's record of verified results in a row.
    pub fn record(&self, worker: WorkerId) -> u32 {
        self.trust.book.record(&worker)
    }

    pub fn is_banned(&self, worker: WorkerId) -> bool {
        self.banned.contains(&worker)
    }
}
