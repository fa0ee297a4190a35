//! Attempts beyond the plain one-lease-per-task path: orphaned attempts
//! (whose worker disconnected or went quiet, still welcome to report), and
//! speculative second attempts of stragglers once nothing is left to queue.
//!
//! A task has at most two live attempts: its lease (`TaskState::Leased`) and
//! a speculative one (`Job::second`). The first report claimed wins; the
//! other attempt is cancelled. If one attempt ends without a result (its
//! worker left, or it failed and the task gets another try), the other one
//! carries on as the task's lease.

use super::*;

/// Most orphaned attempts remembered; older ones are forgotten (their
/// results are then refused, and the task simply runs again).
const MAX_ORPHANS: usize = 65_536;

/// An attempt whose worker went quiet: its task, and when it was leased.
#[derive(Clone, Copy)]
pub(super) struct Orphan {
    job: u64,
    unit: u32,
    voter: Voter,
    started: Instant,
}

impl Scheduler {
    /// Remembers a lease about to be requeued because its worker went quiet.
    pub(super) fn orphan(&mut self, lease: LeaseId) {
        let Some(info) = self.leases.get(&lease) else { return };
        self.orphans.insert(lease, Orphan { job: info.job, unit: info.unit, voter: info.voter, started: info.started });
        self.orphan_order.push_back(lease);
        while self.orphan_order.len() > MAX_ORPHANS {
            if let Some(old) = self.orphan_order.pop_front() {
                self.orphans.remove(&old);
            }
        }
    }

    /// Forgets a banned worker's orphaned attempts: their reports count for nothing.
    pub(super) fn forget_orphans_of(&mut self, worker: WorkerId) {
        self.orphans.retain(|_, o| o.voter.worker != worker);
        let orphans = &self.orphans;
        self.orphan_order.retain(|l| orphans.contains_key(l));
    }

    pub(super) fn forget_orphans(&mut self, job_id: u64) {
        self.orphans.retain(|_, o| o.job != job_id);
        let orphans = &self.orphans;
        self.orphan_order.retain(|l| orphans.contains_key(l));
    }

    /// The worker an orphaned attempt was granted to.
    pub(super) fn orphan_of(&self, lease: LeaseId) -> Option<WorkerId> {
        self.orphans.get(&lease).map(|o| o.voter.worker)
    }

    /// Whether a report for this orphaned attempt would still be taken.
    pub(super) fn orphan_is_current(&self, lease: LeaseId) -> bool {
        self.orphans
            .get(&lease)
            .is_some_and(|o| self.jobs.get(&o.job).is_some_and(|j| !j.cancelled && j.state[o.unit as usize] != TaskState::Finished))
    }

    /// The task's other live attempt, if it has two.
    pub(super) fn sibling(&self, lease: LeaseId) -> Option<LeaseId> {
        let info = self.leases.get(&lease)?;
        let job = self.jobs.get(&info.job)?;
        let second = job.second.get(&info.unit).copied();
        match job.state[info.unit as usize] {
            TaskState::Leased(first) if first == lease => second,
            TaskState::Leased(first) if second == Some(lease) => Some(first),
            _ => None,
        }
    }

    /// Tells the attempt's worker to stop, and drops the attempt.
    pub(super) fn cancel_attempt(&mut self, lease: LeaseId) {
        if let Some(worker) = self.leases.get(&lease).map(|l| l.worker).filter(|w| self.workers.contains_key(w)) {
            self.output.push_back(Output::Send(worker, CoordinatorMessage::Cancel(Cancel { leases: vec![lease] })));
        }
        self.requeue(lease);
    }

    /// Claims an orphaned attempt for a report arriving on `worker`'s session:
    /// the task's live attempts, if any, are cancelled, and the orphan becomes
    /// the task's lease, already finishing.
    pub(super) fn adopt(&mut self, worker: WorkerId, lease: LeaseId) -> Option<Finishing> {
        if !self.orphan_is_current(lease) {
            self.orphans.remove(&lease);
            return None;
        }
        let Orphan { job: job_id, unit, voter, started } = *self.orphans.get(&lease)?;
        if voter.worker != worker || self.banned.contains(&worker) {
            // Only the worker it was granted to may report it.
            return None;
        }
        let voter = self.workers.get(&worker).map_or(voter, |w| w.voter);
        let job = self.jobs.get(&job_id)?;
        let live: Vec<LeaseId> = match job.state[unit as usize] {
            // The speculative attempt first, so that dropping the lease does
            // not promote it.
            TaskState::Leased(current) => job.second.get(&unit).copied().into_iter().chain([current]).collect(),
            _ => vec![],
        };
        if live.iter().any(|l| self.leases.get(l).is_some_and(|l| l.finishing)) {
            // Another attempt's report is being stored: it wins, unless it
            // ends in a retry; the orphan stays, for that case.
            return None;
        }
        self.orphans.remove(&lease);
        for l in live {
            self.cancel_attempt(l);
        }
        // Requeueing put the task back in the ready queue; `pump` skips it
        // once it is no longer `Ready`.
        let job = self.jobs.get_mut(&job_id).expect("checked above");
        job.state[unit as usize] = TaskState::Leased(lease);
        job.in_flight += 1;
        let deadline = self.now + self.lease_ttl;
        self.leases.insert(lease, LeaseInfo { job: job_id, unit, worker, voter, deadline, started, finishing: true });
        self.adopted += 1;
        Some(self.finishing(lease, job_id, unit))
    }

    /// Once nothing is queued, gives workers with no lease at all a second
    /// attempt of the oldest stragglers: tasks whose only attempt has run longer than
    /// the lease lifetime and twice its job's mean so far (after at least one
    /// task of the job finished). Called from the periodic tick.
    pub fn speculate(&mut self, now: Instant) -> usize {
        self.now = now;
        if !self.ready.is_empty() {
            return 0;
        }
        let mut stragglers: Vec<(Instant, LeaseId)> = self
            .leases
            .iter()
            .filter(|(id, l)| {
                let Some(job) = self.jobs.get(&l.job) else { return false };
                let mean = job.done_time.checked_div(job.done_count).unwrap_or(Duration::MAX);
                !l.finishing
                    && !job.cancelled
                    && job.done_count > 0
                    && job.state[l.unit as usize] == TaskState::Leased(**id)
                    && !job.second.contains_key(&l.unit)
                    && now.saturating_duration_since(l.started) > self.lease_ttl.max(mean.saturating_mul(2))
            })
            .map(|(id, l)| (l.started, *id))
            .collect();
        stragglers.sort();
        let mut granted = 0;
        for (_, first) in stragglers {
            let info = &self.leases[&first];
            let (job_id, unit, holder) = (info.job, info.unit, info.worker);
            // Only a worker with nothing at all: `slots` counts prefetched
            // leases too, so a worker with any lease may have no idle executor.
            let free = self
                .workers
                .iter()
                .find(|(id, w)| {
                    **id != holder && w.leases.is_empty() && w.slots > 0 && !self.banned.contains(id) && self.eligible(**id, job_id, unit)
                })
                .map(|(id, _)| *id);
            let Some(wid) = free else { continue };
            let second = self.grant(wid, job_id, unit);
            self.jobs.get_mut(&job_id).expect("straggler's job").second.insert(unit, second);
            granted += 1;
        }
        self.speculated += granted as u64;
        granted
    }
}
