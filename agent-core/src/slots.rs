//! Executors, one per slot: started, idle, running a lease (until its
//! deadline), resting after a run for the CPU budget's duty cycle, or down.
//! An executor that dies is started again; one that dies this many times in
//! a row without loading is started again only after a pause, doubling each
//! time (its script may be unreachable while the coordinator that serves it
//! restarts). Each executor has an id of its own, so news from one already
//! replaced is recognised as stale.

use crate::{Agent, Millis, Output};
use idlecore_protocol::{decode_worker, FailureKind, LeaseId, WorkerMessage};

const MAX_CRASHES: u32 = 3;
const REVIVE_START_MS: Millis = 1_000;
const REVIVE_MAX_MS: Millis = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Started, not loaded yet.
    Starting,
    Idle,
    Running {
        lease: LeaseId,
        started: Millis,
        deadline: Millis,
    },
    /// Resting after a run (the duty cycle) until then.
    Resting {
        until: Millis,
    },
    /// Failed; started again at `revive_at`, or never (it could not be started at all).
    Down {
        revive_at: Option<Millis>,
    },
}

#[derive(Debug)]
pub(crate) struct Slot {
    id: u32,
    pub(crate) state: State,
    /// Failures in a row without loading.
    crashes: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Slots {
    slots: Vec<Slot>,
    next_id: u32,
}

impl Slots {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn index(&self, id: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    pub(crate) fn idle(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.state == State::Idle)
    }

    pub(crate) fn running(&self, lease: LeaseId) -> Option<usize> {
        self.slots.iter().position(|s| matches!(s.state, State::Running { lease: l, .. } if l == lease))
    }

    pub(crate) fn next_timeout(&self) -> Option<Millis> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                State::Running { deadline, .. } => Some(deadline),
                State::Resting { until } => Some(until),
                State::Down { revive_at } => revive_at,
                State::Starting | State::Idle => None,
            })
            .min()
    }

    fn fresh_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }
}

impl<M: Clone, I: Clone> Agent<M, I> {
    /// Grows to `n` executors, or shrinks by ending the last ones; returns
    /// the leases that were running in the slots removed.
    pub(crate) fn resize(&mut self, n: usize) -> Vec<LeaseId> {
        let mut stopped = vec![];
        while self.slots.slots.len() > n {
            let slot = self.slots.slots.len() - 1;
            if let Some(Slot { state: State::Running { lease, .. }, .. }) = self.slots.slots.pop() {
                stopped.push(lease);
            }
            self.output.push_back(Output::Retire { slot });
        }
        while self.slots.slots.len() < n {
            let id = self.slots.fresh_id();
            self.slots.slots.push(Slot { id, state: State::Starting, crashes: 0 });
            self.output.push_back(Output::Spawn { slot: self.slots.slots.len() - 1, id });
        }
        stopped
    }

    /// Ends the slot's executor (stopping any run) and starts a new one.
    pub(crate) fn replace_slot(&mut self, slot: usize) {
        let id = self.slots.fresh_id();
        if let Some(s) = self.slots.slots.get_mut(slot) {
            s.id = id;
            s.state = State::Starting;
            self.output.push_back(Output::Spawn { slot, id });
        }
    }

    /// Puts the lease on the slot's executor.
    pub(crate) fn occupy(&mut self, slot: usize, lease: LeaseId, timeout_ms: u32) {
        let (started, deadline) = (self.now, self.now + timeout_ms as Millis);
        self.slots.slots[slot].state = State::Running { lease, started, deadline };
    }

    pub(crate) fn on_ready(&mut self, id: u32) {
        let Some(i) = self.slots.index(id) else { return };
        let s = &mut self.slots.slots[i];
        if s.state == State::Starting {
            s.crashes = 0;
            s.state = State::Idle;
            self.dispatch();
        }
    }

    /// A run of `ran_ms` ended in slot `i`: counts the CPU given and rests
    /// the slot to keep the budget's duty cycle.
    fn ran(&mut self, i: usize, ran_ms: Millis) {
        self.status.cpu_seconds += ran_ms as f64 / 1000.0;
        let rest = self.cfg.plan.rest_ms(ran_ms as f64);
        self.slots.slots[i].state = if rest < 1.0 { State::Idle } else { State::Resting { until: self.now + rest.ceil() as Millis } };
    }

    pub(crate) fn on_run_ended(&mut self, id: u32, frame: Vec<u8>, ran_ms: Millis) {
        let Some(i) = self.slots.index(id) else { return };
        let State::Running { lease, .. } = self.slots.slots[i].state else { return };
        self.ran(i, ran_ms);
        let Some(ids) = self.end_run(lease) else { return };
        let ok = match decode_worker(&frame) {
            Ok(WorkerMessage::Result(r)) if r.lease == lease => {
                self.task_event(ids, true, r.elapsed_ms);
                true
            }
            Ok(WorkerMessage::Failure(f)) if f.lease == lease => {
                self.status.tasks_failed += 1;
                self.task_event(ids, false, 0);
                false
            }
            other => {
                // Named, not printed: formatting whole protocol messages costs a browser package kilobytes.
                let why = match other {
                    Ok(_) => "executor answered for another lease".to_string(),
                    Err(e) => format!("executor answered with a bad frame: {e}"),
                };
                self.fail(lease, ids, FailureKind::Internal, why);
                self.dispatch();
                return;
            }
        };
        if ok {
            self.status.tasks_done += 1;
        }
        self.report(lease, frame);
        self.dispatch();
    }

    pub(crate) fn on_executor_failed(&mut self, id: u32, why: String) {
        let Some(i) = self.slots.index(id) else { return };
        if let State::Down { .. } = self.slots.slots[i].state {
            return;
        }
        let slot = &mut self.slots.slots[i];
        let running = match slot.state {
            State::Running { lease, .. } => Some(lease),
            _ => None,
        };
        slot.crashes += 1;
        let crashes = slot.crashes;
        if crashes <= MAX_CRASHES {
            self.replace_slot(i);
        } else {
            let wait = (REVIVE_START_MS << (crashes - MAX_CRASHES - 1).min(6)).min(REVIVE_MAX_MS);
            self.slots.slots[i].state = State::Down { revive_at: Some(self.now + wait) };
            self.status.last_error = Some(format!("executor {i} keeps failing to start ({why}); trying again in {wait} ms"));
        }
        if let Some(lease) = running {
            if let Some(ids) = self.end_run(lease) {
                self.fail(lease, ids, FailureKind::ExecutorCrashed, why.clone());
            }
        }
        let waiting_to_revive = self.slots.slots.iter().filter(|s| matches!(s.state, State::Down { revive_at: Some(_) })).count();
        if waiting_to_revive > 0 && waiting_to_revive == self.slots.len() {
            // No executor at all for now: give the queued leases back (free
            // retries elsewhere) rather than hold them.
            for l in std::mem::take(&mut self.waiting) {
                self.fail(l.lease, (l.job, l.task), FailureKind::ExecutorCrashed, format!("no executor could start: {why}"));
            }
        }
        self.dispatch();
    }

    /// The host could not start executor `id` at all (no Workers here, a
    /// policy forbidding them): the slot stays down, and an agent with no
    /// executor left cannot go on.
    pub(crate) fn on_spawn_failed(&mut self, id: u32, why: String) {
        let Some(i) = self.slots.index(id) else { return };
        self.slots.slots[i].state = State::Down { revive_at: None };
        self.status.last_error = Some(format!("cannot start an executor: {why}"));
        if self.slots.slots.iter().all(|s| s.state == State::Down { revive_at: None }) {
            self.output.push_back(Output::Fatal(format!("idlecore: cannot start executor Workers: {why}")));
        }
        self.post_status(false);
    }

    /// Runs past their deadline fail (their executor is ended and started
    /// again); rests that are over free their slot; executors due to be
    /// started again are.
    pub(crate) fn slot_timeouts(&mut self) {
        let mut freed = false;
        for i in 0..self.slots.len() {
            match self.slots.slots[i].state {
                State::Running { lease, started, deadline } if deadline <= self.now => {
                    self.status.cpu_seconds += self.now.saturating_sub(started) as f64 / 1000.0;
                    self.replace_slot(i);
                    if let Some(ids) = self.end_run(lease) {
                        self.fail(lease, ids, FailureKind::Timeout, "the task passed its wall-clock deadline".into());
                    }
                    freed = true;
                }
                State::Resting { until } if until <= self.now => {
                    self.slots.slots[i].state = State::Idle;
                    freed = true;
                }
                State::Down { revive_at: Some(at) } if at <= self.now => self.replace_slot(i),
                _ => {}
            }
        }
        if freed {
            self.dispatch();
        }
    }
}
