//! The coordinator's own native slots: threads that run leases with the
//! native engine (wasmtime under the project's WASI host, as `idlecore
//! worker` runs them), so a function call is answered even when no worker
//! can take it. Each slot keeps instances warm (reset between runs) and all
//! share one cache of compiled modules.
//!
//! Runs wait in one queue, first come first served; a run whose caller has
//! gone, or whose deadline passed while it waited, is dropped unrun.

use idlecore_agent_core::lru::Lru;
use idlecore_native_engine::{run_lease, runtime, Compiled, Executor, Stop, THREAD_STACK};
use idlecore_protocol::{Lease, Sha256Hash, WorkerMessage};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Compiled modules kept in memory (each a few hundred KiB to a few MiB).
const COMPILED_KEPT: usize = 64;

/// One run for a slot.
pub struct NativeRun {
    pub lease: Lease,
    pub module: Arc<Compiled>,
    /// The bytes of the lease's input blobs, in the order it names them.
    pub inputs: Vec<Vec<u8>>,
    /// Its deadline, and a flag that withdraws it (a faster answer came).
    pub stop: Stop,
    pub reply: oneshot::Sender<NativeOutcome>,
    /// Counts of waiting runs it is in: each one up while it waits for a
    /// slot (from `submit` until a slot starts or drops it).
    pub queued: Vec<Arc<AtomicUsize>>,
}

/// What a run gave: the report a worker would have sent.
#[derive(Debug)]
pub struct NativeOutcome {
    pub report: WorkerMessage,
    /// The slot had no instance of the module ready and made one.
    pub cold: bool,
    /// From the run's start in the slot to its end.
    pub ran: Duration,
}

/// The slots and the queue they take runs from.
pub struct NativeSlots {
    slots: usize,
    queue: Mutex<VecDeque<NativeRun>>,
    ready: Condvar,
    compiled: Mutex<Lru<Sha256Hash, Arc<Compiled>>>,
    running: AtomicUsize,
}

impl NativeSlots {
    /// Starts `slots` threads (none: every run is refused).
    pub fn start(slots: usize) -> std::io::Result<Arc<NativeSlots>> {
        let pool = Arc::new(NativeSlots {
            slots,
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            compiled: Mutex::new(Lru::new(COMPILED_KEPT)),
            running: AtomicUsize::new(0),
        });
        for slot in 0..slots {
            let pool = pool.clone();
            std::thread::Builder::new().name(format!("idlecore-native-{slot}")).stack_size(THREAD_STACK).spawn(move || pool.serve())?;
        }
        Ok(pool)
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Runs waiting for a slot, and runs in progress.
    pub fn load(&self) -> (usize, usize) {
        (self.lock_queue().len(), self.running.load(Ordering::Relaxed))
    }

    /// The module compiled, if it is in the cache.
    pub fn compiled(&self, hash: Sha256Hash) -> Option<Arc<Compiled>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner()).get(&hash).cloned()
    }

    /// Compiles and checks a module (as a browser would check it) and keeps
    /// it. CPU work: call it off the async threads.
    pub fn compile(&self, hash: Sha256Hash, wasm: &[u8]) -> Result<Arc<Compiled>, String> {
        if let Some(done) = self.compiled(hash) {
            return Ok(done);
        }
        let module = Arc::new(runtime().compile(hash, wasm)?);
        self.compiled.lock().unwrap_or_else(|e| e.into_inner()).insert(hash, module.clone(), 1);
        Ok(module)
    }

    /// Queues a run; false (and the run dropped, its counts as they were)
    /// when there are no slots.
    pub fn submit(&self, run: NativeRun) -> bool {
        if self.slots == 0 {
            return false;
        }
        for q in &run.queued {
            q.fetch_add(1, Ordering::Relaxed);
        }
        self.lock_queue().push_back(run);
        self.ready.notify_one();
        true
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<NativeRun>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot's thread: one run at a time, for as long as the process lives.
    fn serve(&self) {
        let mut executor = Executor::default();
        loop {
            let run = {
                let mut queue = self.lock_queue();
                loop {
                    match queue.pop_front() {
                        Some(run) => break run,
                        None => queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            };
            for q in &run.queued {
                q.fetch_sub(1, Ordering::Relaxed);
            }
            if run.reply.is_closed() || run.stop.due() {
                // The caller has its answer (or gave up): the run is not owed.
                continue;
            }
            self.running.fetch_add(1, Ordering::Relaxed);
            let before = executor.instances();
            let started = Instant::now();
            let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_lease(&mut executor, &run.module, &run.lease, run.inputs, &run.stop)
            }));
            self.running.fetch_sub(1, Ordering::Relaxed);
            let report = match report {
                Ok(report) => report,
                Err(_) => {
                    // A bug in the host, not the task's doing: start the slot afresh.
                    tracing::error!(lease = %run.lease.lease, "a native slot panicked; its instances are dropped");
                    executor = Executor::default();
                    WorkerMessage::Failure(idlecore_protocol::TaskFailure {
                        lease: run.lease.lease,
                        kind: idlecore_protocol::FailureKind::Internal,
                        message: "the coordinator's native slot failed".into(),
                    })
                }
            };
            let cold = executor.instances() != before;
            let _ = run.reply.send(NativeOutcome { report, cold, ran: started.elapsed() });
        }
    }
}
