//! The agent's side of the CPU budget and of the coordinator's credit: how
//! many executors run, how many leases this session is offered, and giving
//! back what the agent will not run.

use super::Agent;
use idlecore_protocol::{encode_worker, Capacity, FailureKind, TaskFailure, WorkerMessage};

impl Agent {
    /// Computing allowed: not paused and a CPU share above zero.
    pub(super) fn active(&self) -> bool {
        !self.paused && self.plan.workers > 0
    }

    /// Leases to hold: the executors there are plus prefetched ones (0 when inactive).
    pub(super) fn capacity(&self) -> u32 {
        if !self.active() {
            return 0;
        }
        let w = self.pool.size() as u32;
        w.saturating_add(self.opts.prefetch.unwrap_or(w)).min(idlecore_protocol::limits::MAX_SLOTS)
    }

    /// What this session may be sent: the capacity less the runs carried over
    /// from an earlier session (they hold executors the coordinator does not see).
    pub(super) fn offered(&self) -> u32 {
        self.capacity().saturating_sub(self.carried.len() as u32)
    }

    /// Brings executors, held leases, the coordinator's view and the session
    /// in line with the budget and pause state; called whenever they change.
    pub(super) fn apply_budget(&mut self) {
        let workers = if self.active() { self.plan.workers as usize } else { 0 };
        let stopped = match self.pool.resize(workers) {
            Ok(stopped) => stopped,
            Err(e) => {
                self.executor_failed(&e);
                Vec::new()
            }
        };
        self.crashes.resize(self.pool.size(), 0);
        self.revivals.retain(|i, _| *i < workers);
        self.status.workers = self.pool.size() as u32;
        self.status.cpu = if self.active() { self.plan.cores() / self.opts.cores() as f64 } else { 0.0 };
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
        if workers > 0 && self.pool.size() == 0 {
            // No Worker can be made here (no nested Workers, blocked by CSP).
            crate::status::report_fatal(&format!(
                "idlecore: cannot start executor Workers: {}",
                self.status.last_error.as_deref().unwrap_or("unknown error")
            ));
            return;
        }
        if self.session.is_none() && self.reconnect.is_none() {
            self.connect();
        }
        self.refresh_state();
        self.dispatch();
    }

    /// Sends `Capacity` if the coordinator's view is out of date.
    pub(super) fn tell_capacity(&mut self) {
        let offered = self.offered();
        let Some(s) = &mut self.session else { return };
        if s.capacity != offered && s.blob_path.is_some() {
            s.capacity = offered;
            self.send_msg(&WorkerMessage::Capacity(Capacity { slots: offered }));
        }
    }

    /// A run is over (or stopped): forgets it; returns its (job, task).
    pub(super) fn end_run(&mut self, lease: u64) -> Option<(u64, u32)> {
        let ids = self.running.remove(&lease);
        if self.carried.remove(&lease) {
            // Its executor is free for this session's leases now.
            self.tell_capacity();
        }
        ids
    }

    /// Gives a lease back unrun or stopped; the coordinator re-queues it for free.
    pub(super) fn withdraw(&mut self, lease: u64) {
        let why = if self.paused { "paused" } else { "the CPU budget was lowered" };
        let failure = TaskFailure { lease, kind: FailureKind::Withdrawn, message: why.into() };
        self.report(lease, encode_worker(&WorkerMessage::Failure(failure)));
    }
}
