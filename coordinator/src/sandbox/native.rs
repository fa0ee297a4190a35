//! The coordinator's own native slots: threads that run leases with the
//! native engine (wasmtime under the project's WASI host, as `idlecore
//! worker` runs them), so a function call is answered even when no worker
//! can take it. One executor per slot keeps instances warm (reset between
//! runs); a run takes the free executor holding its module, so warmth does
//! not depend on which thread makes the run. All share one cache of
//! compiled modules.
//!
//! Runs wait in one queue, first come first served; a run whose caller has
//! gone, or whose deadline passed while it waited, is dropped unrun.
//!
//! A short run may also be made on the caller's own thread (`run_here`)
//! when a slot is free and no run waits: it takes that slot's place, so no
//! more runs than slots happen at once, and it is spared the hand-off to a
//! slot thread and back (two thread wake-ups, most of a short call's cost).
//! Only threads marked with `allow_runs_here` may, as their stack must hold
//! a task's.

use idlecore_agent_core::lru::Lru;
use idlecore_native_engine::{run_lease, runtime, Compiled, Executor, Stop, THREAD_STACK};
use idlecore_protocol::{Lease, Sha256Hash, WorkerMessage};
use std::cell::Cell;
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
    queue: Mutex<Queue>,
    ready: Condvar,
    compiled: Mutex<Lru<Sha256Hash, Arc<Compiled>>>,
}

/// Waiting runs, and the executors of the slots not running one (a slot
/// thread, or a run made on a caller's thread in a slot's place, takes one).
struct Queue {
    runs: VecDeque<NativeRun>,
    free: Vec<Executor>,
}

impl Queue {
    /// A free executor, one holding an instance of `module` if any does.
    fn take(&mut self, module: Sha256Hash) -> Option<Executor> {
        let i = self.free.iter().rposition(|e| e.holds(module)).or(self.free.len().checked_sub(1))?;
        Some(self.free.swap_remove(i))
    }
}

thread_local! {
    /// Whether this thread may make runs (`allow_runs_here`).
    static HERE: Cell<bool> = const { Cell::new(false) };
}

/// Lets this thread make runs itself (`NativeSlots::run_here`). Only for
/// threads with a stack of at least `THREAD_STACK` (a task's stack is
/// checked against the limit wasmtime is given, not the thread's), e.g.
/// from a tokio runtime's `on_thread_start` with `thread_stack_size` set.
pub fn allow_runs_here() {
    HERE.with(|here| here.set(true));
}

impl NativeSlots {
    /// Starts `slots` threads (none: every run is refused).
    pub fn start(slots: usize) -> std::io::Result<Arc<NativeSlots>> {
        let pool = Arc::new(NativeSlots {
            slots,
            queue: Mutex::new(Queue { runs: VecDeque::new(), free: (0..slots).map(|_| Executor::default()).collect() }),
            ready: Condvar::new(),
            compiled: Mutex::new(Lru::new(COMPILED_KEPT)),
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
        let queue = self.lock_queue();
        (queue.runs.len(), self.slots - queue.free.len())
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
        self.lock_queue().runs.push_back(run);
        self.ready.notify_one();
        true
    }

    /// Makes the run on this thread, in a free slot's place, if this thread
    /// may (`allow_runs_here`), a slot is free and no run waits for one.
    /// A run still going after `budget` is stopped and given back (`None`,
    /// as when it may not run here) for a slot to make whole: a run depends
    /// only on its lease, so making it again changes nothing but the time.
    pub fn run_here(&self, module: &Compiled, lease: &Lease, inputs: &[Vec<u8>], stop: &Stop, budget: Duration) -> Option<NativeOutcome> {
        if !HERE.with(Cell::get) {
            return None;
        }
        let mut executor = {
            let mut queue = self.lock_queue();
            if !queue.runs.is_empty() {
                return None;
            }
            queue.take(module.hash)?
        };
        let cut = Instant::now() + budget;
        let cut_short = stop.deadline.is_none_or(|d| cut < d);
        let here_stop = Stop { cancel: stop.cancel.clone(), deadline: Some(if cut_short { cut } else { stop.deadline.unwrap_or(cut) }) };
        let outcome = run_guarded(&mut executor, module, lease, inputs.to_vec(), &here_stop);
        self.give_back(executor);
        let overran = cut_short && matches!(outcome.report, WorkerMessage::Failure(_)) && Instant::now() >= cut && !stop.due();
        (!overran).then_some(outcome)
    }

    /// A run's executor is free again; a waiting run can have it.
    fn give_back(&self, executor: Executor) {
        let mut queue = self.lock_queue();
        queue.free.push(executor);
        if !queue.runs.is_empty() {
            self.ready.notify_one();
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot's thread: one run at a time, for as long as the process lives.
    fn serve(&self) {
        loop {
            let (run, mut executor) = {
                let mut queue = self.lock_queue();
                loop {
                    if !queue.free.is_empty() {
                        if let Some(run) = queue.runs.pop_front() {
                            let executor = queue.take(run.module.hash).expect("a free executor");
                            break (run, executor);
                        }
                    }
                    queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
            };
            for q in &run.queued {
                q.fetch_sub(1, Ordering::Relaxed);
            }
            // The caller has its answer (or gave up): the run is not owed.
            if !run.reply.is_closed() && !run.stop.due() {
                let outcome = run_guarded(&mut executor, &run.module, &run.lease, run.inputs, &run.stop);
                let _ = run.reply.send(outcome);
            }
            self.give_back(executor);
        }
    }
}

/// One run in `executor`; a panic (a bug in the host, not the task's doing)
/// is a failure, and the executor starts afresh.
fn run_guarded(executor: &mut Executor, module: &Compiled, lease: &Lease, inputs: Vec<Vec<u8>>, stop: &Stop) -> NativeOutcome {
    let before = executor.instances();
    let started = Instant::now();
    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_lease(executor, module, lease, inputs, stop)));
    let report = report.unwrap_or_else(|_| {
        tracing::error!(lease = %lease.lease, "a native run panicked; its executor's instances are dropped");
        *executor = Executor::default();
        WorkerMessage::Failure(idlecore_protocol::TaskFailure {
            lease: lease.lease,
            kind: idlecore_protocol::FailureKind::Internal,
            message: "the coordinator's native slot failed".into(),
        })
    });
    NativeOutcome { report, cold: executor.instances() != before, ran: started.elapsed() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idlecore_protocol::{TaskLimits, TaskResult};

    /// Writes "hi" to stdout, or with any argument loops for ever.
    const PROGRAM: &str = r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 16) "hi")
        (func (export "_start")
            (drop (call $sizes (i32.const 32) (i32.const 36)))
            (if (i32.gt_u (i32.load (i32.const 32)) (i32.const 1)) (then (loop $l (br $l))))
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 2))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

    fn module() -> Arc<Compiled> {
        let wasm = crate::sandbox::instrument(&wat::parse_str(PROGRAM).unwrap()).unwrap();
        Arc::new(runtime().compile(Sha256Hash::of(&wasm), &wasm).unwrap())
    }

    fn lease(forever: bool) -> Lease {
        Lease {
            lease: 1,
            job: 0,
            task: 0,
            module: Sha256Hash::of(b""),
            stdin: vec![],
            args: if forever { vec!["forever".into()] } else { vec![] },
            env: vec![],
            limits: TaskLimits { timeout_ms: 10_000, max_output_bytes: 1 << 20, max_memory_pages: 16, fuel: 0 },
            seed: 1,
            deterministic: true,
            dirs: vec![],
            blobs: vec![],
        }
    }

    fn stop(after: Duration) -> Stop {
        Stop { cancel: Default::default(), deadline: Some(Instant::now() + after) }
    }

    fn stdout(outcome: &NativeOutcome) -> &[u8] {
        match &outcome.report {
            WorkerMessage::Result(TaskResult { stdout, .. }) => stdout,
            other => panic!("the run failed: {other:?}"),
        }
    }

    /// Submits a run of `lease` and returns its answer.
    fn submit(slots: &NativeSlots, module: &Arc<Compiled>, lease: Lease, stop: Stop) -> oneshot::Receiver<NativeOutcome> {
        let (reply, answer) = oneshot::channel();
        assert!(slots.submit(NativeRun { lease, module: module.clone(), inputs: vec![], stop, reply, queued: vec![] }));
        answer
    }

    #[test]
    fn a_run_here_takes_a_free_slot_and_gives_it_back() {
        let (slots, module) = (NativeSlots::start(1).unwrap(), module());
        let long = Duration::from_secs(10);
        assert!(slots.run_here(&module, &lease(false), &[], &stop(long), long).is_none(), "a thread not allowed to must not run");
        allow_runs_here();
        let first = slots.run_here(&module, &lease(false), &[], &stop(long), long).expect("a free slot: run here");
        assert_eq!(stdout(&first), b"hi");
        assert!(first.cold);
        let second = slots.run_here(&module, &lease(false), &[], &stop(long), long).unwrap();
        assert!(!second.cold, "the slot's instance is kept warm");
        let other_thread = std::thread::scope(|s| {
            s.spawn(|| {
                allow_runs_here();
                slots.run_here(&module, &lease(false), &[], &stop(long), long).unwrap()
            })
            .join()
            .unwrap()
        });
        assert!(!other_thread.cold, "warm whichever thread makes the run");
        assert_eq!(slots.load(), (0, 0), "the slot is free again");
        // The slot is still there for queued runs.
        let answer = submit(&slots, &module, lease(false), stop(long)).blocking_recv().unwrap();
        assert_eq!(stdout(&answer), b"hi");
        assert!(!answer.cold, "and in the slot's own thread");
    }

    #[test]
    fn no_run_here_while_every_slot_is_busy() {
        let (slots, module) = (NativeSlots::start(1).unwrap(), module());
        allow_runs_here();
        let busy = stop(Duration::from_secs(10));
        let _answer = submit(&slots, &module, lease(true), busy.clone());
        let t = Instant::now();
        while slots.load() != (0, 1) {
            assert!(t.elapsed() < Duration::from_secs(10), "the slot never started the run");
            std::thread::sleep(Duration::from_millis(1));
        }
        let long = Duration::from_secs(10);
        assert!(slots.run_here(&module, &lease(false), &[], &stop(long), long).is_none(), "no more runs than slots");
        busy.cancel.store(true, Ordering::Relaxed);
        while slots.load() != (0, 0) {
            assert!(t.elapsed() < Duration::from_secs(10), "the cancelled run never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(slots.run_here(&module, &lease(false), &[], &stop(long), long).is_some());
    }

    #[test]
    fn a_run_past_its_budget_here_is_given_back_whole() {
        let (slots, module) = (NativeSlots::start(1).unwrap(), module());
        allow_runs_here();
        let t = Instant::now();
        let given_back = slots.run_here(&module, &lease(true), &[], &stop(Duration::from_secs(10)), Duration::from_millis(20));
        assert!(given_back.is_none(), "a run past the budget is not answered from here");
        assert!(t.elapsed() < Duration::from_secs(2), "stopped at its budget, not its deadline");
        assert_eq!(slots.load(), (0, 0));
        // Its own deadline is the call's: within the budget, the failure is the answer.
        let timed_out = slots.run_here(&module, &lease(true), &[], &stop(Duration::from_millis(20)), Duration::from_secs(10));
        assert!(matches!(timed_out.expect("the deadline's failure is an answer").report, WorkerMessage::Failure(_)));
    }
}
