//! idlecore's native engine: wasmtime (Cranelift) with the project's own
//! preview1 host (`idlecore-wasi-host`), so that a task run here gives the
//! same outputs, exit codes, files, fuel counts and failure kinds as in
//! Chromium. The native worker runs its leases with it, the coordinator its
//! function calls (its native slots), and `idlecore run` a task author's module.
//!
//! `engine` compiles and runs modules (instances kept and reset between
//! runs, fuel and memory caps as the browser reads them, runs stopped by an
//! epoch ticker); `host` binds the preview1 imports.

pub mod engine;
pub mod host;

pub use engine::{runtime, Compiled, Executor, RunLimits, THREAD_STACK};
pub use host::Stop;

use idlecore_protocol::{Lease, WorkerMessage};
use idlecore_wasi_host::task;
use std::time::Instant;

/// Runs `lease` on `executor` with its input blobs' bytes (in the order the
/// lease names them) as a worker's executor does: the report a worker would
/// send. `stop` ends the run early (a trap saying it was interrupted).
pub fn run_lease(executor: &mut Executor, module: &Compiled, lease: &Lease, inputs: Vec<Vec<u8>>, stop: &Stop) -> WorkerMessage {
    match task::context(lease, inputs, || host::host_sources(stop)) {
        Ok(ctx) => {
            let started = Instant::now();
            let limits = RunLimits { fuel: lease.limits.fuel, max_memory_pages: lease.limits.max_memory_pages };
            let run = executor.run(module, ctx, limits, stop);
            task::report(lease.lease, run, started.elapsed().as_millis() as u32)
        }
        Err(failure) => WorkerMessage::Failure(failure),
    }
}
