//! The agent's side: a resizable set of executor Workers, a deadline per run,
//! rest between runs (the CPU budget's duty cycle), and replacement of any
//! Worker that is terminated, times out or dies.
//!
//! Events name a slot by the id of the Worker that sent them, so an event
//! from a Worker already replaced or removed is recognised as stale.

use gloo_timers::callback::Timeout;
use idlecore_protocol::{encode_coordinator, CoordinatorMessage, Lease};
use js_sys::{Array, Function, Uint8Array, WebAssembly};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{ErrorEvent, MessageEvent, Worker};

/// Which Worker an event came from (unique for the pool's life).
pub type WorkerId = u32;

/// What executors tell the agent; `ExecutorPool::index` turns the id into a
/// slot index, or `None` when the Worker is gone.
pub enum PoolEvent {
    /// The Worker loaded and can take a job.
    Ready(WorkerId),
    /// A run ended; the frame is a protocol `Result` or `Failure`.
    Done(WorkerId, Vec<u8>),
    /// The run for this lease passed its deadline.
    TimedOut(WorkerId, u64),
    /// The Worker failed outside a run (failed to load, threw).
    Crashed(WorkerId, String),
    /// The slot's rest after a run is over.
    Rested(WorkerId),
}

struct Slot {
    id: WorkerId,
    worker: Worker,
    ready: bool,
    running: Option<u64>,
    /// When the current run started (ms, `performance.now()`).
    started: f64,
    deadline: Option<Timeout>,
    rest: Option<Timeout>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(ErrorEvent)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.worker.set_onmessage(None);
        self.worker.set_onerror(None);
        self.worker.terminate();
    }
}

pub struct ExecutorPool {
    spawn: Function,
    notify: Rc<dyn Fn(PoolEvent)>,
    slots: Vec<Slot>,
    next_id: WorkerId,
}

impl ExecutorPool {
    /// An empty pool; `spawn()` must return a new executor `Worker` (see `agent.js`).
    pub fn new(spawn: Function, notify: Rc<dyn Fn(PoolEvent)>) -> ExecutorPool {
        ExecutorPool { spawn, notify, slots: Vec::new(), next_id: 0 }
    }

    fn make_slot(&mut self) -> Result<Slot, JsValue> {
        let worker: Worker = self.spawn.call0(&JsValue::UNDEFINED)?.dyn_into()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let notify = self.notify.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let data = e.data();
            if data.as_string().as_deref() == Some("ready") {
                notify(PoolEvent::Ready(id));
            } else {
                notify(PoolEvent::Done(id, Uint8Array::new(&data).to_vec()));
            }
        });
        let notify = self.notify.clone();
        let on_error = Closure::<dyn FnMut(ErrorEvent)>::new(move |e: ErrorEvent| {
            e.prevent_default();
            notify(PoolEvent::Crashed(id, e.message()));
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Slot {
            id,
            worker,
            ready: false,
            running: None,
            started: 0.0,
            deadline: None,
            rest: None,
            _on_message: on_message,
            _on_error: on_error,
        })
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// The slot of the Worker that sent an event; `None` if it is gone.
    pub fn index(&self, id: WorkerId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// Grows to `size` slots by starting Workers, or shrinks by terminating
    /// the last ones; returns the leases that were running in removed slots.
    pub fn resize(&mut self, size: usize) -> Result<Vec<u64>, JsValue> {
        let removed = if size < self.slots.len() { self.slots.split_off(size) } else { Vec::new() };
        while self.slots.len() < size {
            let slot = self.make_slot()?;
            self.slots.push(slot);
        }
        Ok(removed.iter().filter_map(|s| s.running).collect())
    }

    pub fn mark_ready(&mut self, index: usize) {
        if let Some(s) = self.slots.get_mut(index) {
            s.ready = true;
        }
    }

    /// A loaded slot with nothing running and no rest to finish.
    pub fn idle_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.ready && s.running.is_none() && s.rest.is_none())
    }

    /// Keeps the slot from taking a run for `ms`; `Rested` follows.
    pub fn rest(&mut self, index: usize, ms: f64) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if ms < 1.0 {
            slot.rest = None;
            return;
        }
        let (notify, id) = (self.notify.clone(), slot.id);
        slot.rest = Some(Timeout::new(ms.min(u32::MAX as f64) as u32, move || notify(PoolEvent::Rested(id))));
    }

    pub fn rested(&mut self, index: usize) {
        if let Some(s) = self.slots.get_mut(index) {
            s.rest = None;
        }
    }

    pub fn running(&self, index: usize) -> Option<u64> {
        self.slots.get(index).and_then(|s| s.running)
    }

    pub fn slot_of(&self, lease: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.running == Some(lease))
    }

    /// Runs `job` in the slot's executor; `inputs` are the bytes of its
    /// input blobs, in the order the lease names them.
    pub fn start(&mut self, index: usize, module: &WebAssembly::Module, job: Lease, inputs: &[Uint8Array]) -> Result<(), JsValue> {
        let slot = &mut self.slots[index];
        let (lease, timeout_ms) = (job.lease, job.limits.timeout_ms);
        let bytes = Uint8Array::from(encode_coordinator(&CoordinatorMessage::Lease(job)).as_slice());
        let message = Array::of2(module, &bytes);
        for input in inputs {
            message.push(input);
        }
        slot.worker.post_message(&message)?;
        slot.running = Some(lease);
        slot.started = super::now_ms();
        let (notify, id) = (self.notify.clone(), slot.id);
        slot.deadline = Some(Timeout::new(timeout_ms, move || notify(PoolEvent::TimedOut(id, lease))));
        Ok(())
    }

    /// The run in this slot ended: its lease and how long it ran (ms).
    pub fn finish(&mut self, index: usize) -> Option<(u64, f64)> {
        let slot = self.slots.get_mut(index)?;
        slot.deadline = None;
        let lease = slot.running.take()?;
        Some((lease, (super::now_ms() - slot.started).max(0.0)))
    }

    /// Terminates the slot's Worker (stopping any run) and starts a new one.
    pub fn replace(&mut self, index: usize) -> Result<Option<u64>, JsValue> {
        let Some(running) = self.slots.get(index).map(|s| s.running) else {
            return Ok(None);
        };
        let fresh = self.make_slot()?;
        self.slots[index] = fresh;
        Ok(running)
    }
}
