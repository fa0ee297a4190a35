//! The executor Worker's side: run each job it is sent and post the outcome.

use crate::lru::Lru;
use crate::wasi::host::HostClocks;
use crate::wasi::instance::{Prepared, RunError, RunLimits};
use crate::wasi::WasiCtx;
use idlecore_protocol::{
    decode_coordinator, encode_worker, CoordinatorMessage, FailureKind, Lease, ModuleHash,
    TaskFailure, TaskResult, WorkerMessage,
};
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
    /// The message handler lives as long as the executor Worker.
    static HANDLER: RefCell<Option<Closure<dyn FnMut(MessageEvent)>>> = const { RefCell::new(None) };
    /// Budgeted in entries (each counts 1).
    static PREPARED: RefCell<Lru<ModuleHash, Rc<Prepared>>> = RefCell::new(Lru::new(PREPARED_KEPT));
}

/// The prepared form of the lease's module. Every job brings a new `Module`
/// object (postMessage clones it), so modules are known by hash; the agent
/// has checked that the bytes it compiled have that hash.
fn prepared(hash: ModuleHash, module: WebAssembly::Module) -> Result<Rc<Prepared>, String> {
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
pub fn run_job(
    module: WebAssembly::Module,
    job: &Lease,
    mut inputs: Vec<Vec<u8>>,
) -> WorkerMessage {
    use idlecore_protocol::BlobTarget;
    let failure = |kind, message: String| {
        WorkerMessage::Failure(TaskFailure {
            lease: job.lease,
            kind,
            message,
        })
    };
    let sizes_match = inputs.len() == job.blobs.len()
        && job
            .blobs
            .iter()
            .zip(&inputs)
            .all(|(b, i)| b.size == i.len() as u64);
    if !sizes_match {
        return failure(
            FailureKind::Internal,
            "the executor was not given the lease's inputs".into(),
        );
    }
    let mut dirs: Vec<Vec<(String, Vec<u8>)>> = job
        .dirs
        .iter()
        .map(|d| {
            d.files
                .iter()
                .map(|f| (f.path.clone(), f.data.clone()))
                .collect()
        })
        .collect();
    let mut stdin = job.stdin.clone();
    for (blob, bytes) in job.blobs.iter().zip(inputs.iter_mut()) {
        let bytes = std::mem::take(bytes);
        match &blob.target {
            BlobTarget::Stdin => stdin = bytes,
            // `decode_coordinator` checked that `dir` is one of the lease's.
            BlobTarget::File { dir, path } => dirs[*dir as usize].push((path.clone(), bytes)),
        }
    }
    let mut ctx = WasiCtx::new(
        "task.wasm",
        &job.args,
        &job.env,
        stdin,
        job.seed,
        job.limits.max_output_bytes,
    );
    if !job.deterministic {
        ctx = ctx.with_clocks(Box::new(HostClocks::new()));
    }
    for (dir, files) in job.dirs.iter().zip(dirs) {
        ctx = match ctx.with_preopen(&dir.guest, dir.writable, files) {
            Ok(c) => c,
            Err(e) => {
                return failure(
                    FailureKind::Internal,
                    format!("preparing {}: {e}", dir.guest),
                )
            }
        };
    }
    let started = super::now_ms();
    let limits = RunLimits {
        fuel: job.limits.fuel,
        max_memory_pages: job.limits.max_memory_pages,
    };
    let prepared = match prepared(job.module, module) {
        Ok(p) => p,
        Err(m) => return failure(FailureKind::ModuleInvalid, m),
    };
    match prepared.run(ctx, limits) {
        Ok(out) => WorkerMessage::Result(TaskResult {
            lease: job.lease,
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            elapsed_ms: (super::now_ms() - started).max(0.0) as u32,
            fuel_used: out.fuel_used,
            files: out.files,
        }),
        Err(RunError::Invalid(m)) => failure(FailureKind::ModuleInvalid, m),
        Err(RunError::Trap(m)) => failure(FailureKind::Trap, m),
        Err(RunError::OutputLimit(max)) => failure(
            FailureKind::OutputLimit,
            format!("stdout and stderr exceeded {max} bytes"),
        ),
        Err(RunError::FuelExhausted(used)) => failure(
            FailureKind::FuelExhausted,
            format!("ran out of fuel after {used} instructions"),
        ),
        Err(RunError::MemoryLimit(m)) => failure(FailureKind::MemoryLimit, m),
    }
}

fn handle(event: MessageEvent) -> WorkerMessage {
    let data: Array = event.data().unchecked_into();
    let module: WebAssembly::Module = data.get(0).unchecked_into();
    let bytes = Uint8Array::new(&data.get(1)).to_vec();
    let inputs = (2..data.length())
        .map(|i| Uint8Array::new(&data.get(i)).to_vec())
        .collect();
    // Messages are named, not printed: formatting whole protocol messages costs the package kilobytes.
    let message = match decode_coordinator(&bytes) {
        Ok(CoordinatorMessage::Lease(lease)) => return run_job(module, &lease, inputs),
        Ok(_) => "executor expected a lease, got another message".to_string(),
        Err(e) => format!("executor expected a lease: {e}"),
    };
    WorkerMessage::Failure(TaskFailure { lease: 0, kind: FailureKind::Internal, message })
}

/// Entry point of an executor Worker: installs the handler, then says "ready".
pub fn start() {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let reply = scope.clone();
    let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let frame = encode_worker(&handle(event));
        let array = Uint8Array::from(frame.as_slice());
        let transfer = Array::of1(&array.buffer());
        let _ = reply.post_message_with_transfer(&array, &transfer);
    });
    scope.set_onmessage(Some(handler.as_ref().unchecked_ref()));
    HANDLER.with(|h| *h.borrow_mut() = Some(handler));
    let _ = scope.post_message(&JsValue::from_str("ready"));
}
