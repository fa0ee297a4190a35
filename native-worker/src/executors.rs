//! One executor per slot, each a thread of its own (a run blocks its thread
//! while it computes). The agent core decides when a slot's executor starts,
//! runs a lease, or is replaced (a run past its deadline); replacing one
//! stops its run at the engine's next tick, and its late news is ignored by
//! the core as stale (each executor has an id).

use idlecore_native_engine::{run_lease, Compiled, Executor, Stop, THREAD_STACK};
use idlecore_protocol::{encode_worker, Lease};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

/// A compiled module as the agent core holds it.
pub type Module = Arc<Compiled>;
/// A task input's bytes as the agent core holds them.
pub type Input = Arc<Vec<u8>>;

/// News from an executor thread.
#[derive(Debug)]
pub enum Event {
    Ready {
        id: u32,
    },
    /// A run ended: the report's frame, and how long it ran.
    Done {
        id: u32,
        frame: Vec<u8>,
        ran_ms: u64,
    },
    Failed {
        id: u32,
        why: String,
    },
}

struct Job {
    lease: Lease,
    module: Module,
    inputs: Vec<Input>,
}

struct Handle {
    jobs: mpsc::Sender<Job>,
    stop: Stop,
}

impl Handle {
    fn end(self) {
        // The run in progress stops at the next tick; the thread ends when
        // its queue is dropped.
        self.stop.cancel.store(true, Ordering::Relaxed);
    }
}

/// The executor threads, by slot.
pub struct Executors {
    slots: Vec<Option<Handle>>,
    notify: Arc<dyn Fn(Event) + Send + Sync>,
}

impl Executors {
    pub fn new(notify: Arc<dyn Fn(Event) + Send + Sync>) -> Executors {
        Executors { slots: Vec::new(), notify }
    }

    /// Starts executor `id` in `slot`, ending the one it had.
    pub fn spawn(&mut self, slot: usize, id: u32) -> std::io::Result<()> {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        if let Some(old) = self.slots[slot].take() {
            old.end();
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        let stop = Stop::default();
        let notify = self.notify.clone();
        let cancel = stop.clone();
        std::thread::Builder::new()
            .name(format!("idlecore-executor-{slot}"))
            .stack_size(THREAD_STACK)
            .spawn(move || serve(id, queue, cancel, notify))?;
        self.slots[slot] = Some(Handle { jobs, stop });
        Ok(())
    }

    /// Ends the executor in `slot`.
    pub fn retire(&mut self, slot: usize) {
        if let Some(handle) = self.slots.get_mut(slot).and_then(Option::take) {
            handle.end();
        }
    }

    /// Ends every executor (the worker is stopping).
    pub fn retire_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.retire(slot);
        }
    }

    /// Gives `slot`'s executor a run.
    pub fn run(&mut self, slot: usize, lease: Lease, module: Module, inputs: Vec<Input>) -> Result<(), String> {
        let handle = self.slots.get(slot).and_then(Option::as_ref).ok_or("no executor in this slot")?;
        handle.jobs.send(Job { lease, module, inputs }).map_err(|_| "the executor has ended".to_string())
    }
}

/// An executor thread: ready at once, then one run at a time.
fn serve(id: u32, queue: mpsc::Receiver<Job>, stop: Stop, notify: Arc<dyn Fn(Event) + Send + Sync>) {
    let mut executor = Executor::default();
    notify(Event::Ready { id });
    while let Ok(job) = queue.recv() {
        if stop.cancel.load(Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(&mut executor, &job, &stop)));
        match run {
            Ok(frame) => notify(Event::Done { id, frame, ran_ms: started.elapsed().as_millis() as u64 }),
            Err(panic) => {
                let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                notify(Event::Failed { id, why: format!("the executor failed: {}", why.unwrap_or_default()) });
                return;
            }
        }
    }
}

/// Runs one lease; the frame to report.
fn run_job(executor: &mut Executor, job: &Job, stop: &Stop) -> Vec<u8> {
    let inputs = job.inputs.iter().map(|i| i.as_ref().clone()).collect();
    encode_worker(&run_lease(executor, &job.module, &job.lease, inputs, stop))
}
