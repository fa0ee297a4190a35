//! The executor Worker's side: run each job it is sent and post the outcome.

use super::instance::{Prepared, RunError, RunLimits};
use idlecore_agent_core::lru::Lru;
use idlecore_protocol::{
    decode_coordinator, encode_worker, CoordinatorMessage, FailureKind, Lease, Sha256Hash, TaskFailure, WorkerMessage,
};
use idlecore_wasi_host::task;
use js_sys::{Array, Uint8Array, WebAssembly};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

/// Modules this executor keeps checked (each with its last instance); the
/// least recently used goes first. A kept instance holds up to 16 MiB of memory.
const PREPARED_KEPT: usize = 4;

thread_local! {
    /// The message listener lives as long as the executor Worker.
    static LISTENER: RefCell<Option<gloo_events::EventListener>> = const { RefCell::new(None) };
    /// Budgeted in entries (each counts 1).
    static PREPARED: RefCell<Lru<Sha256Hash, Rc<Prepared>>> = RefCell::new(Lru::new(PREPARED_KEPT));
}

/// The prepared form of the lease's module. Every job brings a new `Module`
/// object (postMessage clones it), so modules are known by hash; the agent
/// has checked that the bytes it compiled have that hash.
fn prepared(hash: Sha256Hash, module: WebAssembly::Module) -> Result<Rc<Prepared>, String> {
    PREPARED.with(|kept| {
        let mut kept = kept.borrow_mut();
        if let Some(p) = kept.get(&hash) {
            return Ok(p.clone());
        }
        let p = Rc::new(Prepared::new(module)?);
        kept.insert(hash, p.clone(), 1);
        Ok(p)
    })
}

/// Runs one job and returns the protocol message to report. `inputs` are
/// the bytes of the lease's input blobs, in the order it names them.
pub fn run_job(module: WebAssembly::Module, job: &Lease, inputs: Vec<Vec<u8>>) -> WorkerMessage {
    let ctx = match task::context(job, inputs, super::js_host::host_sources) {
        Ok(ctx) => ctx,
        Err(failure) => return WorkerMessage::Failure(failure),
    };
    let started = super::now_ms();
    let limits = RunLimits { fuel: job.limits.fuel, max_memory_pages: job.limits.max_memory_pages };
    let run = prepared(job.module, module).map_err(RunError::Invalid).and_then(|p| p.run(ctx, limits));
    task::report(job.lease, run, (super::now_ms() - started).max(0.0) as u32)
}

fn handle(event: &MessageEvent) -> WorkerMessage {
    let data: Array = event.data().unchecked_into();
    let module: WebAssembly::Module = data.get(0).unchecked_into();
    let bytes = Uint8Array::new(&data.get(1)).to_vec();
    let inputs = (2..data.length()).map(|i| Uint8Array::new(&data.get(i)).to_vec()).collect();
    // Messages are named, not printed: formatting whole protocol messages costs the package kilobytes.
    let message = match decode_coordinator(&bytes) {
        Ok(CoordinatorMessage::Lease(lease)) => return run_job(module, &lease, inputs),
        Ok(_) => "executor expected a lease, got another message".to_string(),
        Err(e) => format!("executor expected a lease: {e}"),
    };
    WorkerMessage::Failure(TaskFailure { lease: 0, kind: FailureKind::Internal, message })
}

/// Entry point of an executor Worker: listens for jobs, then says "ready".
pub fn start() {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let reply = scope.clone();
    let listener = gloo_events::EventListener::new(&scope, "message", move |event| {
        let Some(event) = event.dyn_ref::<MessageEvent>() else { return };
        let frame = encode_worker(&handle(event));
        let array = Uint8Array::from(frame.as_slice());
        let transfer = Array::of1(&array.buffer());
        let _ = reply.post_message_with_transfer(&array, &transfer);
    });
    LISTENER.with(|l| *l.borrow_mut() = Some(listener));
    let _ = scope.post_message(&JsValue::from_str("ready"));
}
