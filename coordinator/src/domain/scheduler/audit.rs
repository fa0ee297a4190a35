//! Workers' standing across jobs, and the audit of what they vouched for.
//!
//! Every acceptance a worker's result took part in joins its *tail*: the
//! acceptances not yet vouched for. A passed spot check vouches for the
//! whole tail (colluders can agree with each other, but not with a known
//! answer); where a job has no spot checks, a replicated quorum's agreement
//! does instead. A worker outvoted by a quorum with a trusted worker in it
//! loses its record, and one caught by a spot check is banned; either way
//! its tail is decided again.
//!
//! A job completes only when no acceptance of it rests on unvouched workers
//! alone: each such worker still connected gets a spot check aimed at it
//! (which it cannot tell from others); the tails of workers that left, or
//! that no known answer can check, are decided again.

use super::validation::Known;
use super::*;
use crate::domain::model::ResultRecord;
use crate::domain::trust::TrustBook;
use std::sync::Arc;

/// Acceptances remembered per worker's tail (oldest dropped first).
const MAX_TAIL: usize = 4096;

/// An acceptance a worker's result took part in.
#[derive(Clone)]
pub(super) struct Vouch {
    pub(super) job: u64,
    pub(super) task: u32,
    /// The worker, with its origin (a task decided again excludes both).
    pub(super) voter: Voter,
    /// The accepted digest: this worker's vote, which still counts when the
    /// task is audited.
    pub(super) digest: Sha256Hash,
    /// The accepted output, for a job with a comparator (a vote that still
    /// counts is one others are compared with).
    pub(super) output: Option<Arc<ResultRecord>>,
}

/// Every worker's standing, across jobs.
pub(super) struct Trust {
    pub(super) book: TrustBook<WorkerId>,
    /// Unvouched acceptances of each worker.
    tails: HashMap<WorkerId, VecDeque<Vouch>>,
    rng: u64,
}

impl Trust {
    pub(super) fn new(seed: u64) -> Trust {
        Trust { book: TrustBook::new(), tails: HashMap::new(), rng: seed | 1 }
    }

    /// Uniform in [0, 1) (xorshift64*: draws must be unpredictable to
    /// workers, not cryptographic: nothing of them shows in a lease).
    pub(super) fn draw(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Adds to a tail; returns the oldest entry if the tail overflowed.
    fn vouch(&mut self, v: Vouch) -> Option<Vouch> {
        let tail = self.tails.entry(v.voter.worker).or_default();
        tail.push_back(v);
        if tail.len() > MAX_TAIL {
            return tail.pop_front();
        }
        None
    }

    /// The worker's tail is vouched for (a passed spot check, or a quorum
    /// where spot checks are off); its record grows.
    pub(super) fn vouched(&mut self, who: WorkerId) {
        self.book.valid(&who);
        self.tails.remove(&who);
    }

    /// Drops `who`'s acceptances in `job` from its tail.
    fn clear_tail_in(&mut self, who: WorkerId, job: u64) {
        if let Some(t) = self.tails.get_mut(&who) {
            t.retain(|v| v.job != job);
        }
    }

    fn tail_in(&self, who: WorkerId, job: u64) -> impl Iterator<Item = &Vouch> {
        self.tails.get(&who).into_iter().flatten().filter(move |v| v.job == job)
    }
}

impl Scheduler {
    /// A task's record is stored: its acceptance joins the tails of the
    /// workers whose results it rests on. One banned meanwhile has it decided
    /// again; one that left, by the audit. Where the job has no spot checks,
    /// the quorum's agreement vouches instead (for this job only).
    pub(super) fn vouch_decided(
        &mut self,
        job_id: u64,
        task: u32,
        accepted: (Sha256Hash, Option<Arc<ResultRecord>>),
        vouchers: Vec<Voter>,
    ) {
        let Some(checks) = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()) else { return };
        if checks.policy.spot_checks == 0.0 && vouchers.len() >= 2 {
            for v in &vouchers {
                self.trust.clear_tail_in(v.worker, job_id);
            }
            return;
        }
        for voter in vouchers {
            let v = Vouch { job: job_id, task, voter, digest: accepted.0, output: accepted.1.clone() };
            if self.banned.contains(&voter.worker) {
                self.reopen(job_id, task, voter, None);
            } else if !self.workers.contains_key(&voter.worker) {
                checks_of(&mut self.jobs, job_id).departed.push(v);
            } else if let Some(old) = self.trust.vouch(v) {
                // Too long a tail to audit: its oldest acceptance is decided again now.
                self.reopen(old.job, old.task, old.voter, Some(&old));
            }
        }
    }

    /// Bans a worker: its live leases go to others, its votes on undecided
    /// tasks no longer count, and its tail is decided again.
    pub(super) fn ban(&mut self, job_id: u64, worker: WorkerId) {
        if !self.banned.insert(worker) {
            return;
        }
        if let Some(checks) = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()) {
            checks.stats.banned += 1;
        }
        self.trust.book.invalid(&worker);
        let live: Vec<LeaseId> = self.leases.iter().filter(|(_, l)| l.voter.worker == worker && !l.finishing).map(|(id, _)| *id).collect();
        for lease in live {
            self.cancel_attempt(lease);
        }
        let jobs: Vec<u64> = self.jobs.keys().copied().collect();
        for id in jobs {
            self.drop_audit(id, worker);
            let Some(checks) = self.jobs.get_mut(&id).and_then(|j| j.checks.as_deref_mut()) else { continue };
            let struck: Vec<u32> = checks.open.iter_mut().filter_map(|(t, c)| (c.quorum.strike(worker) > 0).then_some(*t)).collect();
            for task in struck {
                self.top_up(id, task);
            }
        }
        self.forget_orphans_of(worker);
        self.reverify_tail(worker, None);
        self.recheck_all();
    }

    /// A worker outvoted by a quorum: its record starts again, and its tail
    /// (what it helped accept since it was last vouched for, alone or not)
    /// is decided again. Not what came before: an honest worker outvoted by
    /// colluders would otherwise cost all its history. And not only what it
    /// accepted alone: a saboteur that cheats once trusted and then turns
    /// honest again would have its next spot check vouch for its cheats.
    /// In a job with a comparator, only its records and its part of the tail.
    pub(super) fn outvoted(&mut self, job_id: u64, worker: WorkerId) {
        if let Some(own) = self.own_book(job_id) {
            own.invalid(&worker);
            self.reverify_tail(worker, Some(job_id));
        } else {
            self.trust.book.invalid(&worker);
            self.reverify_tail(worker, None);
        }
    }

    /// A worker passed a spot check of `job_id`: its tail is vouched for and
    /// its record grows; in a job with a comparator, within that job only.
    pub(super) fn vouched(&mut self, job_id: u64, worker: WorkerId) {
        if let Some(own) = self.own_book(job_id) {
            own.valid(&worker);
            self.trust.clear_tail_in(worker, job_id);
        } else {
            self.trust.vouched(worker);
        }
    }

    /// The records of a job with a comparator (see `JobChecks::own_book`).
    fn own_book(&mut self, job_id: u64) -> Option<&mut TrustBook<WorkerId>> {
        self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()).and_then(|c| c.own_book.as_mut())
    }

    /// Reopens the tasks in `worker`'s tail (of one job, or all), each to be
    /// decided by a fresh quorum without it.
    fn reverify_tail(&mut self, worker: WorkerId, only: Option<u64>) {
        let Some(tail) = self.trust.tails.get_mut(&worker) else { return };
        let (reopen, keep): (VecDeque<Vouch>, VecDeque<Vouch>) = tail.drain(..).partition(|v| only.is_none_or(|j| v.job == j));
        *tail = keep;
        for v in reopen {
            self.reopen(v.job, v.task, v.voter, None);
        }
    }

    /// A job was dropped (completed or cancelled): its acceptances leave the
    /// tails (with the outputs they hold, for a job with a comparator).
    pub(super) fn forget_tails_of(&mut self, job_id: u64) {
        for tail in self.trust.tails.values_mut() {
            tail.retain(|v| v.job != job_id);
        }
    }

    /// A worker's session ended: its record cannot be used again, and its
    /// tail can no longer be spot-checked, so the tasks in it are decided
    /// again before their jobs complete.
    pub(super) fn worker_left(&mut self, worker: WorkerId) {
        self.trust.book.forget(&worker);
        // Its orphaned attempts were forgotten with the ban.
        self.banned.remove(&worker);
        let jobs: Vec<u64> = self.jobs.keys().copied().collect();
        for id in &jobs {
            self.drop_audit(*id, worker);
        }
        if let Some(tail) = self.trust.tails.remove(&worker) {
            for v in tail {
                if let Some(checks) = self.jobs.get_mut(&v.job).and_then(|j| j.checks.as_deref_mut()) {
                    checks.departed.push(v);
                }
            }
        }
        self.recheck_all();
    }

    /// Decides again, keeping the worker's votes, the tasks of `job_id` in
    /// its tail (that it cannot be spot-checked for).
    pub(super) fn reverify_in(&mut self, job_id: u64, worker: WorkerId) {
        let tail: Vec<Vouch> = self.trust.tail_in(worker, job_id).cloned().collect();
        self.trust.clear_tail_in(worker, job_id);
        for v in tail {
            self.reopen(job_id, v.task, v.voter, Some(&v));
        }
    }

    /// An aimed spot check went back unanswered (its lease expired, or its
    /// worker left or was banned): the job stops waiting for it, and the
    /// worker's tail in the job is decided again instead.
    pub(super) fn aimed_spot_lost(&mut self, job_id: u64, unit: u32) {
        let Some(checks) = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()) else { return };
        let Some(target) = checks.spots.remove(&unit).and_then(|s| s.target) else { return };
        checks.auditing.remove(&target);
        self.reverify_in(job_id, target);
        self.recheck_all();
    }

    /// A worker paused (no slots): audit spot checks aimed at it will not
    /// run soon, so its tails in those jobs are decided again instead.
    pub(super) fn worker_paused(&mut self, worker: WorkerId) {
        let waiting: Vec<u64> =
            self.jobs.iter().filter(|(_, j)| j.checks.as_ref().is_some_and(|c| c.auditing.contains(&worker))).map(|(id, _)| *id).collect();
        for id in &waiting {
            self.drop_audit(*id, worker);
            self.reverify_in(*id, worker);
        }
        if !waiting.is_empty() {
            self.recheck_all();
        }
    }

    /// Stops waiting for an audit spot check aimed at `worker` (banned or gone).
    fn drop_audit(&mut self, job_id: u64, worker: WorkerId) {
        let Some(checks) = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()) else { return };
        if !checks.auditing.remove(&worker) {
            return;
        }
        let units: Vec<u32> = checks.spots.iter().filter(|(_, s)| s.target == Some(worker)).map(|(u, _)| *u).collect();
        for unit in units {
            self.drop_unit(job_id, unit);
        }
    }

    /// Re-evaluates completion of every validated job that has all its tasks
    /// decided (after a ban or a departure changed what they wait for).
    fn recheck_all(&mut self) {
        let waiting: Vec<u64> =
            self.jobs.iter().filter(|(_, j)| j.checks.is_some() && j.finished as usize == j.tasks.len()).map(|(id, _)| *id).collect();
        for id in waiting {
            self.close_if_complete(id);
        }
    }

    /// Drops the job if `completed` says it is done; returns whether it was.
    pub(super) fn close_if_complete(&mut self, job_id: u64) -> bool {
        let done = self.completed(job_id);
        if done {
            self.drop_job(job_id);
        }
        done
    }

    /// Whether every task of the job has its record and, for a validated
    /// job, no acceptance rests on unvouched workers alone (see the module
    /// docs); otherwise starts what is missing. A completed job stops its
    /// outstanding spot checks and is reported as `Output::JobEnded`.
    pub(super) fn completed(&mut self, job_id: u64) -> bool {
        let Some(job) = self.jobs.get(&job_id) else { return false };
        if (job.finished as usize) < job.tasks.len() {
            return false;
        }
        let Some(checks) = &job.checks else {
            self.output.push_back(Output::JobEnded { job: job_id, checks: None });
            return true;
        };
        if !checks.auditing.is_empty() {
            return false;
        }
        let departed = checks.departed.clone();
        let mut waiting = false;
        for v in departed {
            waiting |= self.reopen(job_id, v.task, v.voter, Some(&v));
        }
        let unvouched: Vec<WorkerId> =
            self.workers.keys().copied().filter(|w| !self.banned.contains(w) && self.trust.tail_in(*w, job_id).next().is_some()).collect();
        for worker in unvouched {
            waiting = true;
            if !self.aim_spot_check(job_id, worker) {
                self.reverify_in(job_id, worker);
            }
        }
        if let Some(checks) = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()) {
            checks.departed.clear();
        }
        if waiting {
            return false;
        }
        let live: Vec<LeaseId> = self.leases.iter().filter(|(_, l)| l.job == job_id).map(|(id, _)| *id).collect();
        for lease in live {
            self.cancel_attempt(lease);
        }
        let stats = self.jobs[&job_id].checks.as_ref().map(|c| c.stats);
        self.output.push_back(Output::JobEnded { job: job_id, checks: stats });
        true
    }

    /// Queues a spot check only `worker` may take, from a known answer it
    /// did not give. False if there is none.
    fn aim_spot_check(&mut self, job_id: u64, worker: WorkerId) -> bool {
        let Some(voter) = self.workers.get(&worker).filter(|w| w.slots > 0).map(|w| w.voter) else { return false };
        let Some(checks) = self.jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()) else { return false };
        let fits: Vec<&Known> = checks.known.iter().filter(|k| !k.voters.iter().any(|v| super::validation::clash(v, &voter))).collect();
        if fits.is_empty() {
            return false;
        }
        let known = fits[(self.trust.draw() * fits.len() as f64) as usize % fits.len()].clone();
        checks.auditing.insert(worker);
        self.add_spot(job_id, known, Some(worker));
        true
    }
}

fn checks_of(jobs: &mut BTreeMap<u64, Job>, job_id: u64) -> &mut super::validation::JobChecks {
    jobs.get_mut(&job_id).and_then(|j| j.checks.as_deref_mut()).expect("a validated job")
}
