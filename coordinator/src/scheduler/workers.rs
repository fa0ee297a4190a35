//! Worker sessions joining, changing their capacity, and leaving.

use super::{LeaseId, Scheduler, Worker, WorkerId};
use crate::outbox::Outbox;
use crate::validate::quorum::Voter;
use std::collections::HashSet;

impl Scheduler {
    /// A worker session with no known network origin.
    pub fn register_worker(
        &mut self,
        slots: u32,
        tx: Outbox,
    ) -> WorkerId {
        self.register_worker_from(slots, tx, None)
    }

    /// A worker session; `origin` identifies its network (replicas of a task
    /// never go to two workers of one origin).
    pub fn register_worker_from(
        &mut self,
        slots: u32,
        tx: Outbox,
        origin: Option<u64>,
    ) -> WorkerId {
        let id = self.next_worker;
        self.next_worker += 1;
        let voter = Voter { worker: id, origin };
        self.workers.insert(
            id,
            Worker {
                slots,
                voter,
                leases: HashSet::new(),
                tx,
                queued: false,
            },
        );
        self.mark_hungry(id);
        self.pump();
        id
    }

    /// The lease is live and held by this worker's session.
    pub fn holds(&self, worker: WorkerId, lease: LeaseId) -> bool {
        self.leases.get(&lease).is_some_and(|l| l.worker == worker)
    }

    /// The worker now takes at most `slots` leases (0: paused). Leases it
    /// holds stay; it gives back what it will not run.
    pub fn set_capacity(&mut self, id: WorkerId, slots: u32) {
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
    pub fn remove_worker(&mut self, id: WorkerId) -> usize {
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
