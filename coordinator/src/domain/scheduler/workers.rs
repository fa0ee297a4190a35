//! Worker sessions joining, changing their capacity, and leaving.

use super::{LeaseId, Scheduler, Worker, WorkerId};
use crate::domain::quorum::Voter;
use std::collections::HashSet;
use std::time::Instant;

impl Scheduler {
    /// A worker session; `origin` identifies its network (replicas of a task
    /// never go to two workers of one origin; `None`: unknown). Leases for it
    /// come out as `Output::Send` to the id returned.
    pub fn register_worker(&mut self, slots: u32, origin: Option<u64>, now: Instant) -> WorkerId {
        self.now = now;
        let id = self.next_worker_id();
        let voter = Voter { worker: id, origin };
        self.workers.insert(id, Worker { slots, voter, leases: HashSet::new(), queued: false });
        self.mark_hungry(id);
        self.pump();
        id
    }

    /// A session that proved (with `resume_secret`) to be worker `id`
    /// reconnected: the worker goes on with what it holds, now at `slots`
    /// from `origin`. If its earlier session was already removed, it joins
    /// again under the same id, and its orphaned attempts are still its own.
    pub fn resume_worker(&mut self, id: WorkerId, slots: u32, origin: Option<u64>, now: Instant) {
        self.now = now;
        let voter = Voter { worker: id, origin };
        match self.workers.get_mut(&id) {
            Some(w) => {
                w.slots = slots;
                w.voter = voter;
            }
            None => {
                self.workers.insert(id, Worker { slots, voter, leases: HashSet::new(), queued: false });
            }
        }
        self.mark_hungry(id);
        self.pump();
    }

    /// The lease is live and held by this worker's session.
    pub fn holds(&self, worker: WorkerId, lease: LeaseId) -> bool {
        self.leases.get(&lease).is_some_and(|l| l.worker == worker)
    }

    /// The worker now takes at most `slots` leases (0: paused). Leases it
    /// holds stay; it gives back what it will not run.
    pub fn set_capacity(&mut self, id: WorkerId, slots: u32, now: Instant) {
        self.now = now;
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        w.slots = slots;
        if slots == 0 {
            self.worker_paused(id);
        }
        self.mark_hungry(id);
        self.pump();
    }

    /// Forgets a worker; its unfinished leases go back to the front of the queue.
    pub fn remove_worker(&mut self, id: WorkerId, now: Instant) -> usize {
        self.now = now;
        let Some(w) = self.workers.remove(&id) else {
            return 0;
        };
        if w.queued {
            // Idle workers that come and go would otherwise pile up here.
            self.hungry.retain(|h| *h != id);
        }
        let mut requeued = 0;
        for lease in w.leases {
            if self.leases.get(&lease).is_some_and(|l| !l.finishing) {
                self.orphan(lease);
                self.requeue(lease);
                requeued += 1;
            }
        }
        self.worker_left(id);
        self.pump();
        requeued
    }
}
