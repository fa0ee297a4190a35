//! What executors tell the agent: ready, done, timed out, crashed, rested;
//! crashed executors are replaced, and revived after a pause when they keep
//! failing to start.

use super::{Agent, Event, MAX_CRASHES, REVIVE_MAX_MS, REVIVE_START_MS};
use crate::executor::pool::PoolEvent;
use crate::status::{report_task, TaskEvent};
use gloo_timers::callback::Timeout;
use idlecore_protocol::{decode_worker, FailureKind, WorkerMessage};

impl Agent {
    pub(super) fn replace_slot(&mut self, slot: usize) {
        if let Err(e) = self.pool.replace(slot) {
            self.executor_failed(&e);
        }
    }

    /// A Worker could not be made (`new Worker` threw).
    pub(super) fn executor_failed(&mut self, e: &wasm_bindgen::JsValue) {
        self.status.last_error = Some(format!("cannot start an executor: {e:?}"));
    }

    pub(super) fn on_pool(&mut self, event: PoolEvent) {
        let id = match &event {
            PoolEvent::Ready(id) | PoolEvent::Done(id, _) | PoolEvent::TimedOut(id, _) => *id,
            PoolEvent::Crashed(id, _) | PoolEvent::Rested(id) => *id,
        };
        // Events of a Worker already replaced or removed are stale.
        let Some(i) = self.pool.index(id) else { return };
        match event {
            PoolEvent::Ready(_) => {
                self.crashes[i] = 0;
                self.pool.mark_ready(i);
                self.dispatch();
            }
            PoolEvent::Rested(_) => {
                self.pool.rested(i);
                self.dispatch();
            }
            PoolEvent::Done(_, frame) => {
                let Some((lease, ran_ms)) = self.pool.finish(i) else { return };
                self.ran(i, ran_ms);
                let Some(ids) = self.end_run(lease) else { return };
                let ok = match decode_worker(&frame) {
                    Ok(WorkerMessage::Result(r)) if r.lease == lease => {
                        report_task(&TaskEvent { job: ids.0, task: ids.1, ok: true, elapsed_ms: r.elapsed_ms });
                        true
                    }
                    Ok(WorkerMessage::Failure(f)) if f.lease == lease => {
                        self.status.tasks_failed += 1;
                        report_task(&TaskEvent { job: ids.0, task: ids.1, ok: false, elapsed_ms: 0 });
                        false
                    }
                    other => {
                        // Named, not printed (see `executor::worker::handle`).
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
            PoolEvent::TimedOut(_, lease) => {
                if self.pool.running(i) != Some(lease) {
                    return;
                }
                if let Some((_, ran_ms)) = self.pool.finish(i) {
                    self.ran(i, ran_ms);
                }
                self.replace_slot(i);
                if let Some(ids) = self.end_run(lease) {
                    self.fail(lease, ids, FailureKind::Timeout, "the task passed its wall-clock deadline".into());
                }
                self.dispatch();
            }
            PoolEvent::Crashed(_, message) => {
                self.crashes[i] += 1;
                let running = self.pool.finish(i).map(|(lease, _)| lease);
                if self.crashes[i] <= MAX_CRASHES {
                    self.replace_slot(i);
                } else {
                    let wait = (REVIVE_START_MS << (self.crashes[i] - MAX_CRASHES - 1).min(6)).min(REVIVE_MAX_MS);
                    self.status.last_error = Some(format!("executor {i} keeps failing to start ({message}); trying again in {wait} ms"));
                    let notify = self.notify.clone();
                    self.revivals.insert(i, Timeout::new(wait, move || notify(Event::Revive(i))));
                }
                if let Some(lease) = running {
                    if let Some(ids) = self.end_run(lease) {
                        self.fail(lease, ids, FailureKind::ExecutorCrashed, message.clone());
                    }
                }
                if !self.revivals.is_empty() && self.revivals.len() == self.pool.size() {
                    // No executor at all for now: give the queued leases back
                    // (free retries elsewhere) rather than hold them.
                    for l in std::mem::take(&mut self.waiting) {
                        self.fail(l.lease, (l.job, l.task), FailureKind::ExecutorCrashed, format!("no executor could start: {message}"));
                    }
                }
                self.dispatch();
            }
        }
    }

    /// A run of `ran_ms` ended in slot `i`: count the CPU given and rest the
    /// slot to keep the budget's duty cycle.
    fn ran(&mut self, i: usize, ran_ms: f64) {
        self.status.cpu_seconds += ran_ms / 1000.0;
        self.pool.rest(i, self.plan.rest_ms(ran_ms));
    }
}
