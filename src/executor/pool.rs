//! The agent's side: a fixed set of executor Workers, a deadline per run, and
//! replacement of any Worker that is terminated, times out or dies.

use idlecore_protocol::{encode_coordinator, CoordinatorMessage, Lease};
use gloo_timers::callback::Timeout;
use js_sys::{Array, Function, Uint8Array, WebAssembly};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{ErrorEvent, MessageEvent, Worker};

/// What executors tell the agent. `usize` is the slot index.
pub enum PoolEvent {
    /// The slot's Worker loaded and can take a job.
    Ready(usize),
    /// A run ended; the frame is a protocol `Result` or `Failure`.
    Done(usize, Vec<u8>),
    /// The run for this lease passed its deadline; the Worker was replaced.
    TimedOut(usize, u64),
    /// The Worker failed outside a run (failed to load, threw); it was replaced.
    Crashed(usize, String),
}

struct Slot {
    worker: Worker,
    ready: bool,
    running: Option<u64>,
    deadline: Option<Timeout>,
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
}

impl ExecutorPool {
    /// `spawn()` must return a new executor `Worker` (see `agent.js`).
    pub fn new(spawn: Function, size: usize, notify: Rc<dyn Fn(PoolEvent)>) -> Result<ExecutorPool, JsValue> {
        let mut pool = ExecutorPool { spawn, notify, slots: Vec::with_capacity(size) };
        for i in 0..size {
            let slot = pool.make_slot(i)?;
            pool.slots.push(slot);
        }
        Ok(pool)
    }

    fn make_slot(&self, index: usize) -> Result<Slot, JsValue> {
        let worker: Worker = self.spawn.call0(&JsValue::UNDEFINED)?.dyn_into()?;
        let notify = self.notify.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let data = e.data();
            if data.as_string().as_deref() == Some("ready") {
                notify(PoolEvent::Ready(index));
            } else {
                notify(PoolEvent::Done(index, Uint8Array::new(&data).to_vec()));
            }
        });
        let notify = self.notify.clone();
        let on_error = Closure::<dyn FnMut(ErrorEvent)>::new(move |e: ErrorEvent| {
            e.prevent_default();
            notify(PoolEvent::Crashed(index, e.message()));
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Slot { worker, ready: false, running: None, deadline: None, _on_message: on_message, _on_error: on_error })
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    pub fn mark_ready(&mut self, index: usize) {
        if let Some(s) = self.slots.get_mut(index) {
            s.ready = true;
        }
    }

    /// A loaded slot with nothing running.
    pub fn idle_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.ready && s.running.is_none())
    }

    pub fn running(&self, index: usize) -> Option<u64> {
        self.slots.get(index).and_then(|s| s.running)
    }

    pub fn slot_of(&self, lease: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.running == Some(lease))
    }

    pub fn start(&mut self, index: usize, module: &WebAssembly::Module, job: Lease) -> Result<(), JsValue> {
        let slot = &mut self.slots[index];
        let (lease, timeout_ms) = (job.lease, job.limits.timeout_ms);
        let bytes = Uint8Array::from(encode_coordinator(&CoordinatorMessage::Lease(job)).as_slice());
        slot.worker.post_message(&Array::of2(module, &bytes))?;
        slot.running = Some(lease);
        let notify = self.notify.clone();
        slot.deadline = Some(Timeout::new(timeout_ms, move || notify(PoolEvent::TimedOut(index, lease))));
        Ok(())
    }

    /// The run in this slot ended; returns its lease.
    pub fn finish(&mut self, index: usize) -> Option<u64> {
        let slot = self.slots.get_mut(index)?;
        slot.deadline = None;
        slot.running.take()
    }

    /// Terminates the slot's Worker (stopping any run) and starts a new one.
    pub fn replace(&mut self, index: usize) -> Result<Option<u64>, JsValue> {
        let running = self.slots.get(index).and_then(|s| s.running);
        let fresh = self.make_slot(index)?;
        self.slots[index] = fresh;
        Ok(running)
    }
}
