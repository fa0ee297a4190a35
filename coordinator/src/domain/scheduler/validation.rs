//! Result validation as the scheduler applies it: replicas of a task on
//! distinct workers and origins, votes on their output digests, adaptive
//! trust, and spot checks against known answers. What workers vouched for,
//! bans and the audit before a job completes are in `audit.rs`.
//!
//! A validated task starts with one unit. Granting a unit to a worker that is
//! not trusted (or is, but loses the draw) raises the task's quorum to the
//! job's `replicas` and queues the extra units; each unit's result is a vote
//! (`report`). Known answers (quorums with a trusted worker agreeing) are sent
//! out again as spot checks, which a worker cannot tell from other tasks.
//! With a comparator, a vote is the digest of the first earlier output the
//! new one agrees with (the caller compares them: `compare_with`).

use super::audit::Vouch;
use super::*;
use crate::domain::model::ResultRecord;
use crate::domain::quorum::{Quorum, Verdict};
use crate::domain::trust::TrustBook;
use std::sync::Arc;

/// Known answers kept per job for spot checks.
const MAX_KNOWN: usize = 256;
/// Output bytes of known answers a job with a comparator keeps at most.
const MAX_KNOWN_BYTES: usize = 64 << 20;
/// Spot checks of a job outstanding at most (past it, none are added).
const MAX_SPOTS: usize = 64;
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
    /// Compared with fewer outputs than the task now has (another report
    /// was counted meanwhile): compare again (`compare_with`) and report again.
    Recompare(ResultRecord),
}

/// A report's vote: the digest of its output or, for a job with a
/// comparator, that of the first earlier output it agrees with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub digest: Sha256Hash,
    /// How many earlier outputs it was compared with (see `compare_with`).
    pub compared: usize,
    /// The check those outputs belonged to (a task decided again starts a new one).
    pub check: u64,
    /// A comparison failed (counted as "differ", which proves nothing).
    pub unsure: bool,
}

impl Vote {
    /// A vote by digest alone.
    pub fn exact(digest: Sha256Hash) -> Vote {
        Vote { digest, compared: usize::MAX, check: 0, unsure: false }
    }

    /// A vote after comparing with `cmp`'s outputs: `class` is the digest of
    /// the one it agreed with, or its own.
    pub fn compared(class: Sha256Hash, cmp: &Comparison, unsure: bool) -> Vote {
        Vote { digest: class, compared: cmp.outputs.len(), check: cmp.check, unsure }
    }
}

/// What a report for a job with a comparator is compared with.
pub struct Comparison {
    pub comparator: Sha256Hash,
    /// The task's check the outputs belong to (see `Vote::check`).
    pub check: u64,
    /// Earlier outputs of the task, one per class, oldest first (for a spot
    /// check, its known answer).
    pub outputs: Vec<(Sha256Hash, Arc<ResultRecord>)>,
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
    /// Comparisons the job's comparator could not make (each counted as "differ").
    #[serde(default)]
    pub comparator_errors: u64,
}

pub(super) struct JobChecks {
    pub(super) policy: Policy,
    /// Tasks being decided.
    pub(super) open: HashMap<u32, Check>,
    /// Units that are spot checks.
    pub(super) spots: HashMap<u32, Spot>,
    /// Answers agreed by a quorum with a trusted worker among them, the
    /// source of spot checks.
    pub(super) known: Vec<Known>,
    /// Output bytes the known answers hold (a job with a comparator).
    known_bytes: usize,
    /// Workers with an audit spot check outstanding: the job waits for them.
    pub(super) auditing: HashSet<WorkerId>,
    /// Acceptances of workers that left before they were vouched for: the
    /// task, who, and the digest it agreed to.
    pub(super) departed: Vec<Vouch>,
    /// Records of this job alone, for a job with a comparator: the job
    /// owner's comparator decides what agrees, so its verdicts earn no trust
    /// (and vouch for nothing) in other jobs.
    pub(super) own_book: Option<TrustBook<WorkerId>>,
    pub(super) stats: ValidationStats,
}

impl JobChecks {
    pub(super) fn new(policy: Policy) -> JobChecks {
        JobChecks {
            policy,
            open: HashMap::new(),
            spots: HashMap::new(),
            known: Vec::new(),
            known_bytes: 0,
            auditing: HashSet::new(),
            departed: Vec::new(),
            own_book: policy.comparator.map(|_| TrustBook::new()),
            stats: ValidationStats::default(),
        }
    }

    pub(super) fn is_spot(&self, unit: u32) -> bool {
        self.spots.contains_key(&unit)
    }

    /// A spot check aimed at one worker by the completion audit.
    pub(super) fn is_aimed(&self, unit: u32) -> bool {
        self.spots.get(&unit).is_some_and(|s| s.target.is_some())
    }
}

pub(super) struct Check {
    pub(super) quorum: Quorum,
    /// Units of this task (each votes at most once).
    pub(super) units: Vec<u32>,
    /// Workers (and their origins) that may not take a unit of it: those
    /// whose acceptance of it is being decided again. (Workers holding or
    /// having voted on a unit are excluded as well, see `eligible`.)
    pub(super) excluded: Vec<Voter>,
    /// The lease whose report was accepted, while its record is stored.
    storing: Option<LeaseId>,
    /// Workers whose results were accepted: their tails take the task once
    /// its record is stored (see `vouch_decided`).
    vouchers: Vec<Voter>,
    /// The first output reported with each digest.
    candidates: Vec<(Sha256Hash, Arc<ResultRecord>)>,
    /// Reopened by a job's audit: its new decision is final (another audit
    /// of it could find the same workers unvouched, and never end).
    final_: bool,
    /// Tells this check from the task's earlier ones (see `Vote::check`).
    serial: u64,
}

impl Check {
    /// A task's check as its first unit starts: one result wanted so far.
    fn first(policy: &Policy, unit: u32) -> Check {
        Check::reopened(Quorum::new(1, policy.max_replicas), vec![unit], vec![], false, 0)
    }

    fn reopened(quorum: Quorum, units: Vec<u32>, excluded: Vec<Voter>, final_: bool, serial: u64) -> Check {
        Check { quorum, units, excluded, storing: None, vouchers: vec![], candidates: vec![], final_, serial }
    }
}

#[derive(Clone)]
pub(super) struct Known {
    pub(super) task: u32,
    digest: Sha256Hash,
    /// Who agreed on it: a spot check goes to someone else.
    pub(super) voters: Vec<Voter>,
    /// The answer itself, for a job with a comparator.
    record: Option<Arc<ResultRecord>>,
}

impl Known {
    /// Output bytes it holds.
    fn bytes(&self) -> usize {
        self.record.as_ref().map_or(0, |r| r.stdout.len() + r.stderr.len() + r.files.0.values().map(Vec::len).sum::<usize>())
    }
}

/// A spot check: the answer it must give, and the one worker it is for,
/// if it audits that worker.
pub(super) struct Spot {
    known: Known,
    pub(super) target: Option<WorkerId>,
}

pub(super) fn clash(a: &Voter, b: &Voter) -> bool {
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
            return match spot.target {
                Some(target) => target == wid,
                None => !spot.known.voters.iter().any(|v| clash(v, &w.voter)),
            };
        }
        let Some(c) = checks.open.get(&job.units[unit as usize]) else { return true };
        let holds = |u: &u32| {
            let live = match job.state[*u as usize] {
                TaskState::Leased(l) => Some(l),
                _ => None,
            };
            live.into_iter().chain(job.second.get(u).copied()).any(|l| self.leases.get(&l).is_some_and(|l| clash(&l.voter, &w.voter)))
        };
        !c.excluded.iter().any(|v| clash(v, &w.voter)) && c.quorum.can_vote(&w.voter) && !c.units.iter().any(holds)
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
        let check = checks.open.entry(task).or_insert_with(|| Check::first(&policy, unit));
        if check.quorum.wanted() >= policy.replicas.max(2) {
            return;
        }
        let u = self.trust.draw();
        let book = checks.own_book.as_ref().unwrap_or(&self.trust.book);
        let wanted = if check.quorum.wanted() < policy.replicas && book.replicate(&voter.worker, policy.trust_threshold, u) {
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
    pub(super) fn top_up(&mut self, job_id: u64, task: u32) {
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        let Some(check) = job.checks.as_mut().and_then(|c| c.open.get(&task)) else { return };
        let coming = check.units.iter().filter(|u| job.state[**u as usize] != TaskState::Finished).count();
        let missing = (check.quorum.wanted() as usize).saturating_sub(check.quorum.votes() + coming);
        for _ in 0..missing {
            let unit = self.add_unit(job_id, task, true);
            let job = self.jobs.get_mut(&job_id).expect("unit added");
            job.checks.as_mut().and_then(|c| c.open.get_mut(&task)).expect("open check").units.push(unit);
        }
    }

    /// A new ready unit running `task`: a replica at the front of the queue
    /// (so that a task's replicas finish together and their votes do not
    /// pile up), a spot check in the spot-check queue.
    fn add_unit(&mut self, job_id: u64, task: u32, front: bool) -> u32 {
        let job = self.jobs.get_mut(&job_id).expect("unit of a held job");
        let unit = job.units.len() as u32;
        job.units.push(task);
        job.state.push(TaskState::Ready);
        if front {
            self.ready.push_front((job_id, unit));
        } else {
            self.spot_ready.push_back((job_id, unit));
        }
        self.wake_starved();
        unit
    }

    /// Counts a claimed report's output as its worker's `vote`. For a job
    /// without validation, simply `Accept`.
    pub fn report(&mut self, lease: LeaseId, vote: Vote, record: ResultRecord, now: Instant) -> Outcome {
        self.now = now;
        let Some(info) = self.leases.get(&lease) else { return Outcome::Counted };
        let (job_id, unit, voter) = (info.job, info.unit, info.voter);
        let Some(job) = self.jobs.get_mut(&job_id) else { return Outcome::Accept(record) };
        let task = job.units[unit as usize];
        let Some(checks) = job.checks.as_deref_mut() else { return Outcome::Accept(record) };
        let digest = vote.digest;
        let open = checks.open.get(&task).filter(|_| !checks.spots.contains_key(&unit) && !job.done[task as usize]);
        let stale = |c: &Check| c.serial != vote.check || c.candidates.len() > vote.compared;
        if vote.compared != usize::MAX && open.is_some_and(|c| stale(c) && !c.candidates.iter().any(|(d, _)| *d == digest)) {
            return Outcome::Recompare(record);
        }
        if checks.spots.get(&unit).is_some_and(|spot| vote.unsure && spot.known.digest != digest) {
            // A comparison failed: this spot check proves nothing either way.
            self.drop_spot_check(lease, self.now);
            return Outcome::Counted;
        }
        checks.stats.results += 1;
        if let Some(spot) = checks.spots.remove(&unit) {
            checks.stats.spot_checks += 1;
            let passed = spot.known.digest == digest;
            if !passed {
                checks.stats.spot_failures += 1;
            }
            if let Some(target) = spot.target {
                checks.auditing.remove(&target);
            }
            self.close_unit(lease);
            if passed {
                self.vouched(job_id, voter.worker);
                if spot.target.is_some() {
                    self.close_if_complete(job_id);
                }
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
        let check = checks.open.entry(task).or_insert_with(|| Check::first(&policy, unit));
        // Decided, and its record being stored: this replica is late. (If that
        // store failed, the unit was run again: decide it again.)
        if check.quorum.is_decided() && check.storing.is_some_and(|l| self.leases.get(&l).is_some_and(|l| l.finishing)) {
            self.close_unit(lease);
            self.pump();
            return Outcome::Counted;
        }
        let decided_before = check.quorum.is_decided();
        if !check.candidates.iter().any(|(d, _)| *d == digest) {
            check.candidates.push((digest, Arc::new(record)));
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
                let record =
                    check.candidates.iter().find(|(d, _)| *d == digest).map(|(_, r)| ResultRecord::clone(r)).expect("a winner's output");
                check.storing = Some(lease);
                if !decided_before {
                    let audited = check.final_;
                    self.settle(job_id, task, digest, agreeing, dissenting, audited);
                }
                Outcome::Accept(record)
            }
            Verdict::Inconclusive => {
                check.storing = Some(lease);
                if !decided_before {
                    checks.stats.inconclusive += 1;
                }
                let outputs = check.candidates.len();
                Outcome::Failed(ResultRecord::failed(
                    task,
                    format!("no quorum: {} results with {outputs} different outputs, none from a majority", check.quorum.votes()),
                ))
            }
        }
    }

    /// Updates trust for an accepted task: agreeing workers of a replicated
    /// quorum gain record, dissenters are `outvoted`; the acceptance joins
    /// each agreeing worker's tail (see `audit.rs`). May queue a spot check.
    fn settle(&mut self, job_id: u64, task: u32, digest: Sha256Hash, agreeing: Vec<Voter>, dissenting: Vec<Voter>, audited: bool) {
        let job = self.jobs.get_mut(&job_id).expect("settled job is held");
        let checks = job.checks.as_deref_mut().expect("validated job");
        let policy = checks.policy;
        // A known answer must not come from colluders agreeing on a wrong
        // one (it would ban the honest): one agreeing worker was trusted.
        let book = checks.own_book.as_mut().unwrap_or(&mut self.trust.book);
        let vouched_by_trusted = agreeing.iter().any(|a| book.record(&a.worker) >= policy.trust_threshold);
        let check = checks.open.get_mut(&task).expect("settled task is open");
        if !audited {
            check.vouchers = agreeing.clone();
        }
        if agreeing.len() >= 2 {
            for a in &agreeing {
                book.valid(&a.worker);
            }
            if vouched_by_trusted {
                let record = policy.comparator.and(check.candidates.iter().find(|(d, _)| *d == digest)).map(|(_, r)| r.clone());
                let known = Known { task, digest, voters: agreeing, record };
                let i = (self.trust.draw() * MAX_KNOWN as f64) as usize % MAX_KNOWN;
                let replaced = checks.known.get(i).filter(|_| checks.known.len() >= MAX_KNOWN).map_or(0, Known::bytes);
                // A comparator job keeps its known answers' outputs: within a budget.
                let fits = checks.known_bytes - replaced + known.bytes() <= MAX_KNOWN_BYTES;
                if fits && checks.known.len() < MAX_KNOWN {
                    checks.known_bytes += known.bytes();
                    checks.known.push(known);
                } else if fits {
                    checks.known_bytes = checks.known_bytes - replaced + known.bytes();
                    checks.known[i] = known;
                }
            }
        } else if !audited {
            checks.stats.accepted_alone += 1;
        }
        let room = checks.spots.len() < MAX_SPOTS;
        if room && !checks.known.is_empty() && self.trust.draw() < policy.spot_checks {
            let i = (self.trust.draw() * checks.known.len() as f64) as usize % checks.known.len();
            let known = checks.known[i].clone();
            self.add_spot(job_id, known, None);
        }
        // Outvoted by untrusted workers alone proves little (colluders can
        // outvote the honest, and would make them pay): only a majority with
        // a trusted worker in it costs the dissenters their record.
        if vouched_by_trusted {
            for d in dissenting {
                tracing::info!(job = job_id, task, worker = d.worker, "result outvoted: worker's record reset");
                self.outvoted(job_id, d.worker);
            }
        }
    }

    /// Queues a spot check of a known answer, for anyone who did not give
    /// it, or only for `target`.
    pub(super) fn add_spot(&mut self, job_id: u64, known: Known, target: Option<WorkerId>) {
        let unit = self.add_unit(job_id, known.task, false);
        let checks = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()).expect("validated job");
        checks.spots.insert(unit, Spot { known, target });
    }

    /// Drops a spot-check unit, running or not.
    pub(super) fn drop_unit(&mut self, job_id: u64, unit: u32) {
        if let Some(c) = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()) {
            c.spots.remove(&unit);
        }
        self.stop_unit(job_id, unit);
    }

    /// Stops a unit that is no longer wanted: its attempts are cancelled, or
    /// it is taken off the queue.
    fn stop_unit(&mut self, job_id: u64, unit: u32) {
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
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

    /// Makes an accepted task undecided again, to be voted on by workers
    /// other than `suspect`. `kept`: the suspect's acceptance was merely not
    /// vouched for (rather than found wrong), so its vote still counts and
    /// the new decision is final. Its stored result is void (see
    /// `Output::Void`). False if the task was not decided (or its job is
    /// not held).
    pub(super) fn reopen(&mut self, job_id: u64, task: u32, suspect: Voter, kept: Option<&Vouch>) -> bool {
        let Some(job) = self.jobs.get_mut(&job_id) else { return false };
        let Some(checks) = job.checks.as_deref_mut() else { return false };
        if job.cancelled {
            return false;
        }
        if !job.done[task as usize] {
            // Being decided already: without it, if it was found wrong
            // (merely unvouched workers may still vote: with few workers
            // there may be no one else).
            if let Some(c) = checks.open.get_mut(&task).filter(|_| kept.is_none()) {
                c.excluded.push(suspect);
                c.quorum.strike(suspect.worker);
            }
            return false;
        }
        job.done[task as usize] = false;
        job.finished -= 1;
        checks.known.retain(|k| k.task != task);
        checks.known_bytes = checks.known.iter().map(Known::bytes).sum();
        checks.stats.reverified += 1;
        let k = checks.policy.reverify_replicas();
        // Unique in the job: every reopening counts one.
        let serial = checks.stats.reverified;
        let mut check = Check::reopened(Quorum::new(k, checks.policy.max_replicas), vec![], vec![suspect], kept.is_some(), serial);
        // With a comparator, a kept vote needs its output, to compare others with.
        if let Some(v) = kept.filter(|v| checks.policy.comparator.is_none() || v.output.is_some()) {
            check.quorum.vote(suspect, v.digest);
            check.candidates.extend(v.output.clone().map(|o| (v.digest, o)));
        }
        checks.open.insert(task, check);
        self.output.push_back(Output::Void { job: job_id, task });
        self.top_up(job_id, task);
        true
    }

    /// The task's record is stored: its other units stop, its check closes,
    /// and the acceptance joins its workers' tails.
    pub(super) fn task_decided(&mut self, job_id: u64, task: u32) {
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        let Some(checks) = job.checks.as_deref_mut() else { return };
        let comparator = checks.policy.comparator.is_some();
        let Some(check) = checks.open.remove(&task) else { return };
        for unit in check.units {
            self.stop_unit(job_id, unit);
        }
        if let Some(digest) = check.quorum.winner() {
            let output = check.candidates.into_iter().find(|(d, _)| *d == digest).map(|(_, o)| o).filter(|_| comparator);
            self.vouch_decided(job_id, task, (digest, output), check.vouchers);
        }
    }

    /// A spot check ended in a failure rather than an output: it proves
    /// nothing either way and is dropped (the task's record stays). An audit
    /// spot check's worker has its tail in the job decided again instead.
    pub fn drop_spot_check(&mut self, lease: LeaseId, now: Instant) {
        self.now = now;
        let Some(info) = self.leases.get(&lease) else { return };
        let (job_id, unit) = (info.job, info.unit);
        let aimed = self.jobs.get(&job_id).and_then(|j| j.checks.as_ref()).is_some_and(|c| c.is_aimed(unit));
        self.close_unit(lease);
        if aimed {
            self.aimed_spot_lost(job_id, unit);
        } else if let Some(c) = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()) {
            c.spots.remove(&unit);
        }
        self.pump();
    }

    /// For a report of a job with a comparator: the outputs to compare it
    /// with. `None` for other jobs (their outputs agree when identical).
    pub fn compare_with(&self, lease: LeaseId) -> Option<Comparison> {
        let info = self.leases.get(&lease)?;
        let job = self.jobs.get(&info.job)?;
        let checks = job.checks.as_deref()?;
        let comparator = checks.policy.comparator?;
        let (check, outputs) = match checks.spots.get(&info.unit) {
            Some(spot) => (0, spot.known.record.iter().map(|r| (spot.known.digest, r.clone())).collect()),
            None => match checks.open.get(&job.units[info.unit as usize]) {
                Some(c) => (c.serial, c.candidates.clone()),
                None => (0, vec![]),
            },
        };
        Some(Comparison { comparator, check, outputs })
    }

    /// A comparison for `job` failed (and counted as "differ").
    pub fn comparator_failed(&mut self, job: u64) {
        if let Some(c) = self.jobs.get_mut(&job).and_then(|j| j.checks.as_deref_mut()) {
            c.stats.comparator_errors += 1;
        }
    }

    /// A running job's validation policy and figures so far.
    pub fn validation(&self, job: u64) -> Option<(Policy, ValidationStats)> {
        self.jobs.get(&job).and_then(|j| j.checks.as_ref()).map(|c| (c.policy, c.stats))
    }

    /// A worker's record of verified results in a row.
    pub fn record(&self, worker: WorkerId) -> u32 {
        self.trust.book.record(&worker)
    }

    pub fn is_banned(&self, worker: WorkerId) -> bool {
        self.banned.contains(&worker)
    }
}
