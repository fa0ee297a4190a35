//! The executor Workers, one per slot, as the agent core starts, runs and
//! retires them (deadlines, rest and crash policy are the core's). Each
//! Worker's news carries the id the core gave it, so news from one already
//! replaced is recognised as stale; its listeners go with it.

use gloo_events::{EventListener, EventListenerOptions};
use idlecore_protocol::{encode_coordinator, CoordinatorMessage, Lease};
use js_sys::{Array, Function, Uint8Array, WebAssembly};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{ErrorEvent, MessageEvent, Worker};

/// What an executor Worker tells the agent.
pub enum ExecutorEvent {
    /// The Worker loaded and can take a job.
    Ready,
    /// A run ended; the frame is a protocol `Result` or `Failure`.
    Done(Vec<u8>),
    /// The Worker failed outside a run (failed to load, threw).
    Crashed(String),
}

struct Executor {
    id: u32,
    worker: Worker,
    /// When the current run started (ms, `performance.now()`).
    started: f64,
    _listeners: [EventListener; 2],
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

pub struct Executors {
    spawn: Function,
    notify: Rc<dyn Fn(u32, ExecutorEvent)>,
    slots: Vec<Option<Executor>>,
}

impl Executors {
    /// No executors yet; `spawn()` must return a new executor `Worker` (see `agent.js`).
    pub fn new(spawn: Function, notify: Rc<dyn Fn(u32, ExecutorEvent)>) -> Executors {
        Executors { spawn, notify, slots: Vec::new() }
    }

    /// Starts executor `id` in `slot`, ending the one there.
    pub fn spawn(&mut self, slot: usize, id: u32) -> Result<(), JsValue> {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        self.slots[slot] = None;
        let worker: Worker = self.spawn.call0(&JsValue::UNDEFINED)?.dyn_into()?;
        let notify = self.notify.clone();
        let on_message = EventListener::new(&worker, "message", move |e| {
            let Some(data) = e.dyn_ref::<MessageEvent>().map(MessageEvent::data) else { return };
            if data.as_string().as_deref() == Some("ready") {
                notify(id, ExecutorEvent::Ready);
            } else {
                notify(id, ExecutorEvent::Done(Uint8Array::new(&data).to_vec()));
            }
        });
        let notify = self.notify.clone();
        // Not passive: the error is handled here, not reported as uncaught.
        let on_error = EventListener::new_with_options(&worker, "error", EventListenerOptions::enable_prevent_default(), move |e| {
            e.prevent_default();
            let message = e.dyn_ref::<ErrorEvent>().map(ErrorEvent::message).unwrap_or_default();
            notify(id, ExecutorEvent::Crashed(message));
        });
        self.slots[slot] = Some(Executor { id, worker, started: 0.0, _listeners: [on_message, on_error] });
        Ok(())
    }

    /// Ends the executor in `slot` and every slot after it.
    pub fn retire(&mut self, slot: usize) {
        self.slots.truncate(slot);
    }

    /// Runs `lease` in the slot's executor; `inputs` are the bytes of its
    /// input blobs, in the order it names them.
    pub fn run(&mut self, slot: usize, module: &WebAssembly::Module, lease: Lease, inputs: &[Uint8Array]) -> Result<(), JsValue> {
        let executor = self.slots.get_mut(slot).and_then(Option::as_mut).ok_or_else(|| JsValue::from_str("no executor in the slot"))?;
        let bytes = Uint8Array::from(encode_coordinator(&CoordinatorMessage::Lease(lease)).as_slice());
        let message = Array::of2(module, &bytes);
        for input in inputs {
            message.push(input);
        }
        executor.worker.post_message(&message)?;
        executor.started = crate::executor::now_ms();
        Ok(())
    }

    /// How long executor `id`'s run took, in ms (0 when it is gone).
    pub fn ran_ms(&self, id: u32) -> u64 {
        let started = self.slots.iter().flatten().find(|e| e.id == id).map(|e| e.started);
        started.map_or(0, |s| (crate::executor::now_ms() - s).max(0.0) as u64)
    }

    /// The id of the executor in `slot`.
    pub fn id(&self, slot: usize) -> Option<u32> {
        self.slots.get(slot).and_then(Option::as_ref).map(|e| e.id)
    }
}
