//! Leases: taken within the credit offered, started on idle executors once
//! their module and inputs are loaded, cancelled, given back unrun
//! (`Withdrawn`, a free retry elsewhere), or failed; and the CPU budget that
//! decides how many executors there are and how much credit is offered.

use crate::{Agent, Output, TaskEvent};
use idlecore_protocol::{encode_worker, FailureKind, Lease, LeaseId, TaskFailure, WorkerMessage};

impl<M: Clone, I: Clone> Agent<M, I> {
    /// Brings executors, held leases, the coordinator's view and the session
    /// in line with the budget and pause state; called whenever they change.
    pub(crate) fn apply_budget(&mut self) {
        let workers = if self.active() { self.cfg.plan.workers as usize } else { 0 };
        let stopped = self.resize(workers);
        self.status.workers = self.slots.len() as u32;
        self.status.cpu = if self.active() { self.cfg.plan.cores() / self.cfg.cores.max(1) as f64 } else { 0.0 };
        // The coordinator hears of a lower capacity before the leases come back,
        // so it does not send them here again.
        self.tell_capacity();
        for lease in stopped {
            // A run carried over from an earlier session was re-queued then already.
            let carried = self.carried.contains(&lease);
            if self.end_run(lease).is_some() && !carried {
                self.withdraw(lease);
            }
        }
        let keep = (self.capacity() as usize).saturating_sub(self.running.len());
        while self.waiting.len() > keep {
            let l = self.waiting.pop_back().expect("longer than keep");
            self.withdraw(l.lease);
        }
        self.ensure_session();
        self.refresh_state();
        self.dispatch();
    }

    /// Queues leases (loading their modules and inputs) and starts what can
    /// start. Leases beyond the capacity (sent before a lower `Capacity`
    /// arrived) go back.
    pub(crate) fn take(&mut self, leases: Vec<Lease>) {
        for lease in leases {
            if self.waiting.len() + self.running.len() >= self.capacity() as usize {
                self.withdraw(lease.lease);
                continue;
            }
            self.waiting.push_back(lease);
        }
        self.dispatch();
    }

    /// Starts waiting leases whose module and inputs are loaded on idle executors.
    pub(crate) fn dispatch(&mut self) {
        while let Some(slot) = self.slots.idle() {
            let Some(pos) = self.waiting.iter().position(|l| self.blobs.ready(l)) else { break };
            let lease = self.waiting.remove(pos).expect("position is valid");
            let module = self.blobs.modules.get(&lease.module).expect("ready").clone();
            let inputs = lease.blobs.iter().filter_map(|b| self.blobs.inputs.get(&b.hash).cloned()).collect();
            self.running.insert(lease.lease, (lease.job, lease.task));
            self.occupy(slot, lease.lease, lease.limits.timeout_ms);
            self.output.push_back(Output::Run { slot, lease, module, inputs });
        }
        // Leases that waited behind those may load now; a module evicted
        // meanwhile loads again.
        self.load_waiting();
        self.post_status(false);
    }

    /// The coordinator no longer wants the lease: forgotten if waiting,
    /// stopped (its executor started again) if running. No report.
    pub(crate) fn cancel(&mut self, lease: LeaseId) {
        self.waiting.retain(|l| l.lease != lease);
        if let Some(slot) = self.slots.running(lease) {
            self.replace_slot(slot);
        }
        self.end_run(lease);
        self.dispatch();
    }

    /// A run is over (or stopped): forgets it; returns its (job, task).
    pub(crate) fn end_run(&mut self, lease: LeaseId) -> Option<(u64, u32)> {
        let ids = self.running.remove(&lease);
        if self.carried.remove(&lease) {
            // Its executor is free for this session's leases now.
            self.tell_capacity();
        }
        ids
    }

    /// Gives a lease back unrun or stopped; the coordinator re-queues it for free.
    pub(crate) fn withdraw(&mut self, lease: LeaseId) {
        let why = if self.paused { "paused" } else { "the CPU budget was lowered" };
        let failure = TaskFailure { lease, kind: FailureKind::Withdrawn, message: why.into() };
        self.report(lease, encode_worker(&WorkerMessage::Failure(failure)));
    }

    /// Reports that the lease failed here, for `kind`'s reason.
    pub(crate) fn fail(&mut self, lease: LeaseId, ids: (u64, u32), kind: FailureKind, message: String) {
        self.status.tasks_failed += 1;
        self.task_event(ids, false, 0);
        self.report(lease, encode_worker(&WorkerMessage::Failure(TaskFailure { lease, kind, message })));
    }

    pub(crate) fn task_event(&mut self, (job, task): (u64, u32), ok: bool, elapsed_ms: u32) {
        self.output.push_back(Output::Task(TaskEvent { job, task, ok, elapsed_ms }));
    }
}
