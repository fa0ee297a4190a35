//! Handing units to workers: the hungry-worker rotation, the ready queues
//! (spot checks first), placement rules (`eligible`), and the lease message.

use super::*;

/// Most ready units a worker looks past for one it may run.
const SCAN: usize = 256;

/// Guest path of a task's read-only input files and of its writable output
/// directory: the layout of every task that does not list its own `dirs`.
pub const INPUT_DIR: &str = "/input";
pub const OUTPUT_DIR: &str = "/output";

/// The lease's directories; `TaskInput::lease_blobs` numbers them the same way.
pub fn task_dirs(input: &TaskInput) -> Vec<idlecore_protocol::TaskDir> {
    use idlecore_protocol::{TaskDir, TaskFile};
    let files =
        |m: &crate::domain::model::FileMap| m.0.iter().map(|(path, data)| TaskFile { path: path.clone(), data: data.clone() }).collect();
    if !input.dirs.is_empty() {
        return input.dirs.iter().map(|d| TaskDir { guest: d.guest.clone(), writable: d.writable, files: files(&d.files) }).collect();
    }
    vec![
        TaskDir { guest: INPUT_DIR.into(), writable: false, files: files(&input.files) },
        TaskDir { guest: OUTPUT_DIR.into(), writable: true, files: vec![] },
    ]
}

impl Scheduler {
    pub(super) fn mark_hungry(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            if !w.queued && (w.leases.len() as u32) < w.slots && !self.banned.contains(&id) {
                w.queued = true;
                self.hungry.push_back(id);
            }
        }
    }

    /// Sends a new lease for the unit to the worker and books it (the caller
    /// records it in the unit's state).
    pub(super) fn grant(&mut self, wid: WorkerId, job_id: u64, unit: u32) -> LeaseId {
        let lease = self.next_lease_id();
        let voter = self.workers.get(&wid).map_or(Voter { worker: wid, origin: None }, |w| w.voter);
        self.on_grant(job_id, unit, voter);
        let job = self.jobs.get_mut(&job_id).expect("a granted task's job exists");
        let task = job.units[unit as usize];
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
            blobs: input.lease_blobs(),
        });
        job.in_flight += 1;
        let now = self.now;
        self.leases.insert(
            lease,
            LeaseInfo { job: job_id, unit, worker: wid, voter, deadline: now + self.lease_ttl, started: now, finishing: false },
        );
        if let Some(w) = self.workers.get_mut(&wid) {
            w.leases.insert(lease);
            self.output.push_back(Output::Send(wid, msg));
        }
        lease
    }

    /// Hands ready units to workers with free slots, round robin. A worker
    /// takes the first ready unit it may run (not a second replica of one
    /// task); one that may run none waits in `starved` for new units.
    pub(super) fn pump(&mut self) {
        let mut granted = false;
        while !self.ready.is_empty() || !self.spot_ready.is_empty() {
            let Some(&wid) = self.hungry.front() else {
                return;
            };
            let Some(w) = self.workers.get_mut(&wid) else {
                self.hungry.pop_front();
                continue;
            };
            if w.leases.len() as u32 >= w.slots || self.banned.contains(&wid) {
                w.queued = false;
                self.hungry.pop_front();
                continue;
            }
            let Some((job_id, unit)) = self.next_unit_for(wid) else {
                self.hungry.pop_front();
                self.workers.get_mut(&wid).expect("checked above").queued = false;
                self.starved.push(wid);
                continue;
            };
            let lease = self.grant(wid, job_id, unit);
            let job = self.jobs.get_mut(&job_id).expect("granted above");
            job.state[unit as usize] = TaskState::Leased(lease);
            let w = self.workers.get_mut(&wid).expect("checked above");
            // Rotate so the next task goes to the next hungry worker.
            self.hungry.pop_front();
            w.queued = false;
            self.mark_hungry(wid);
            granted = true;
        }
        // Grants change what is at the front of the queue: workers that found
        // nothing they may run look once more.
        if granted && !self.starved.is_empty() && !(self.ready.is_empty() && self.spot_ready.is_empty()) {
            self.wake_starved();
            self.pump();
        }
    }

    /// Takes the first spot check, else the first ready unit, the worker
    /// may run, leaving the others queued in order.
    fn next_unit_for(&mut self, wid: WorkerId) -> Option<(u64, u32)> {
        let mut spots = std::mem::take(&mut self.spot_ready);
        let found = self.first_eligible(wid, &mut spots);
        self.spot_ready = spots;
        if found.is_some() {
            return found;
        }
        let mut ready = std::mem::take(&mut self.ready);
        let found = self.first_eligible(wid, &mut ready);
        self.ready = ready;
        found
    }

    /// Pops the first unit of `queue` the worker may run, dropping units no
    /// longer ready and looking past at most `SCAN` it may not run.
    fn first_eligible(&self, wid: WorkerId, queue: &mut VecDeque<(u64, u32)>) -> Option<(u64, u32)> {
        let mut passed = Vec::new();
        let mut found = None;
        while let Some((job_id, unit)) = queue.pop_front() {
            let Some(job) = self.jobs.get(&job_id) else {
                continue;
            };
            if job.cancelled || job.state[unit as usize] != TaskState::Ready {
                continue;
            }
            if self.eligible(wid, job_id, unit) {
                found = Some((job_id, unit));
                break;
            }
            passed.push((job_id, unit));
            if passed.len() >= SCAN {
                break;
            }
        }
        for entry in passed.into_iter().rev() {
            queue.push_front(entry);
        }
        found
    }

    /// Workers that found no unit they may run get another look.
    pub(super) fn wake_starved(&mut self) {
        for wid in std::mem::take(&mut self.starved) {
            self.mark_hungry(wid);
        }
    }
}
