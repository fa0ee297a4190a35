//! Functions between the HTTP API, the store and the runs that answer them:
//! deploying (the module checked as a WASI command and compiled at once),
//! listing, removing, restoring at start-up, and calls.
//!
//! A call is a lease like a task's. Today every call runs in the
//! coordinator's native slots (`sandbox::native`); a call waits for a slot at
//! most until its function's timeout, and the queue is bounded per function
//! and in all, so overload is refused at once (429) instead of piling up.
//! A call's caller going away withdraws its run.

use super::{ServiceError, Services};
use crate::domain::functions::{check_name, CallEnd, CallStats, DeployRequest, Function, ServedBy, StatsView};
use crate::domain::scheduler::task_seed;
use crate::sandbox::native::{NativeOutcome, NativeRun, NativeSlots};
use crate::store::{StoreError, Write};
use idlecore_native_engine::{Compiled, Stop};
use idlecore_protocol::{FailureKind, Lease, Sha256Hash, WorkerMessage};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How many calls may wait for a run.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// In all.
    pub max_queued: usize,
    /// For one function.
    pub max_queued_per_function: usize,
}

/// A deployed function with its figures.
struct Deployed {
    function: Function,
    queued: Arc<AtomicUsize>,
    stats: Mutex<CallStats>,
}

/// The deployed functions and what runs their calls.
pub struct Functions {
    deployed: RwLock<HashMap<String, Arc<Deployed>>>,
    slots: Arc<NativeSlots>,
    queued: Arc<AtomicUsize>,
    limits: CallLimits,
    calls: AtomicU64,
}

/// A function as listed: its deployment and its figures.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionInfo {
    #[serde(flatten)]
    pub function: Function,
    pub stats: StatsView,
}

/// What a call gave the caller.
#[derive(Debug)]
pub struct CallAnswer {
    pub served_by: ServedBy,
    /// The run had to make an instance (or compile the module) first.
    pub cold: bool,
    /// From the call's arrival to its answer.
    pub elapsed: Duration,
    pub outcome: CallOutcome,
}

#[derive(Debug)]
pub enum CallOutcome {
    /// The function ran to its end: its exit code (any) and output.
    Exited { exit_code: i32, stdout: Vec<u8>, stderr: Vec<u8>, fuel_used: u64 },
    /// The function failed: a trap, its fuel, memory or output limit.
    Failed { kind: FailureKind, message: String },
}

impl Functions {
    pub fn new(slots: Arc<NativeSlots>, limits: CallLimits) -> Functions {
        Functions { deployed: RwLock::new(HashMap::new()), slots, queued: Arc::new(AtomicUsize::new(0)), limits, calls: AtomicU64::new(0) }
    }

    fn get(&self, name: &str) -> Option<Arc<Deployed>> {
        self.deployed.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn put(&self, function: Function) {
        let deployed = Deployed { queued: Arc::new(AtomicUsize::new(0)), stats: Mutex::default(), function };
        self.deployed.write().unwrap_or_else(|e| e.into_inner()).insert(deployed.function.name.clone(), Arc::new(deployed));
    }

    /// Whether anyone may call `name` without a token (`None`: no such function).
    pub fn is_public(&self, name: &str) -> Option<bool> {
        self.get(name).map(|d| d.function.public)
    }
}

impl Deployed {
    fn info(&self) -> FunctionInfo {
        FunctionInfo { function: self.function.clone(), stats: self.stats.lock().unwrap_or_else(|e| e.into_inner()).view() }
    }

    fn record(&self, end: CallEnd, since: Instant) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).record(end, since.elapsed().as_micros() as u64);
    }
}

/// Loads every deployed function (at start-up).
pub fn restore(services: &Services) -> Result<usize, StoreError> {
    let functions = services.store.load_functions()?;
    let n = functions.len();
    for f in functions {
        services.functions.put(f);
    }
    Ok(n)
}

/// Deploys `name` (again, if it exists: its figures start afresh). Returns
/// whether it is new, and the function.
pub async fn deploy(services: &Services, name: &str, req: DeployRequest) -> Result<(bool, Function), ServiceError> {
    let bad = ServiceError::BadRequest;
    check_name(name).map_err(bad)?;
    req.check().map_err(bad)?;
    let runnable = services
        .store
        .runnable(req.module)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("module {} (upload it first)", req.module)))?;
    // Compiling checks it is a WASI command the workers' host can run, and
    // makes the first call warm.
    compile_stored(services, runnable).await?.map_err(|e| bad(format!("the module cannot be a function: {e}")))?;
    let function = req.into_function(name.to_string(), runnable, unix_secs());
    services.store.write(Write::PutFunction(function.clone())).await?;
    let new = services.functions.get(name).is_none();
    services.functions.put(function.clone());
    tracing::info!(name, module = %function.module, new, "function deployed");
    Ok((new, function))
}

pub fn list(services: &Services) -> Vec<FunctionInfo> {
    let deployed = services.functions.deployed.read().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<FunctionInfo> = deployed.values().map(|d| d.info()).collect();
    all.sort_by(|a, b| a.function.name.cmp(&b.function.name));
    all
}

pub fn info(services: &Services, name: &str) -> Result<FunctionInfo, ServiceError> {
    Ok(services.functions.get(name).ok_or_else(|| not_found(name))?.info())
}

/// Removes a function; calls already running finish.
pub async fn remove(services: &Services, name: &str) -> Result<(), ServiceError> {
    if services.functions.get(name).is_none() {
        return Err(not_found(name));
    }
    services.store.write(Write::DeleteFunction { name: name.to_string() }).await?;
    services.functions.deployed.write().unwrap_or_else(|e| e.into_inner()).remove(name);
    tracing::info!(name, "function removed");
    Ok(())
}

fn not_found(name: &str) -> ServiceError {
    ServiceError::NotFound(format!("function {name:?}"))
}

/// Sets its flag when dropped: the caller went away before its answer.
struct WithdrawOnDrop(Arc<AtomicBool>);

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Answers one call of `name` that arrived at `arrived`, with `stdin` and
/// `args`, within the function's timeout.
pub async fn call(
    services: &Services,
    name: &str,
    stdin: Vec<u8>,
    args: Vec<String>,
    arrived: Instant,
) -> Result<CallAnswer, ServiceError> {
    let fns = &services.functions;
    let deployed = fns.get(name).ok_or_else(|| not_found(name))?;
    let f = &deployed.function;
    f.check_call(&stdin, &args).map_err(ServiceError::BadRequest)?;
    let deadline = arrived + Duration::from_millis(f.timeout_ms as u64);
    if fns.slots.slots() == 0 {
        deployed.record(CallEnd::Rejected, arrived);
        return Err(ServiceError::Busy("no worker can take the call and this coordinator runs none itself (--native-slots 0)".into(), 1));
    }
    let over_function = deployed.queued.load(Ordering::Relaxed) >= fns.limits.max_queued_per_function;
    if over_function || fns.queued.load(Ordering::Relaxed) >= fns.limits.max_queued {
        deployed.record(CallEnd::Rejected, arrived);
        let whose = if over_function { format!("function {name:?}") } else { "this coordinator".to_string() };
        return Err(ServiceError::Overloaded(format!("too many calls are waiting for {whose}; retry shortly"), 1));
    }
    let (module, compiled_now) = compiled(services, f).await?;
    let n = fns.calls.fetch_add(1, Ordering::Relaxed);
    let lease = Lease {
        lease: n as u128,
        job: 0,
        task: 0,
        module: f.runnable,
        stdin,
        args,
        env: f.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        limits: f.task_limits(),
        // Seeded per call, so that runs of one call (a replica, a re-run) agree.
        seed: task_seed(u64::MAX, n as u32) ^ n,
        deterministic: true,
        dirs: vec![],
        blobs: vec![],
    };
    let withdraw = WithdrawOnDrop(Arc::new(AtomicBool::new(false)));
    let stop = Stop { cancel: withdraw.0.clone(), deadline: Some(deadline) };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let run = NativeRun { lease, module, inputs: vec![], stop, reply, queued: vec![deployed.queued.clone(), fns.queued.clone()] };
    if !fns.slots.submit(run) {
        return Err(ServiceError::Busy("the coordinator's native slots are not running".into(), 1));
    }
    // A run stuck in a host call past its deadline is not waited for long.
    let waited = tokio::time::timeout_at((deadline + Duration::from_millis(500)).into(), answer).await;
    let outcome = match waited {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) | Err(_) => {
            deployed.record(CallEnd::TimedOut, arrived);
            return Err(ServiceError::Timeout(format!("no native slot was free within the function's timeout of {} ms", f.timeout_ms)));
        }
    };
    let NativeOutcome { report, cold, .. } = outcome;
    let cold = cold || compiled_now;
    let served_by = ServedBy::Coordinator;
    let outcome = match report {
        WorkerMessage::Result(r) => {
            CallOutcome::Exited { exit_code: r.exit_code, stdout: r.stdout, stderr: r.stderr, fuel_used: r.fuel_used }
        }
        WorkerMessage::Failure(failure) if Instant::now() >= deadline && failure.kind == FailureKind::Trap => {
            deployed.record(CallEnd::TimedOut, arrived);
            return Err(ServiceError::Timeout(format!("the function ran past its timeout of {} ms", f.timeout_ms)));
        }
        WorkerMessage::Failure(failure) => CallOutcome::Failed { kind: failure.kind, message: failure.message },
        other => {
            return Err(ServiceError::Internal(format!("a native run ended with {other:?}")));
        }
    };
    let end = match outcome {
        CallOutcome::Exited { .. } => CallEnd::Answered { served_by, cold },
        CallOutcome::Failed { .. } => CallEnd::Failed { served_by, cold },
    };
    deployed.record(end, arrived);
    Ok(CallAnswer { served_by, cold, elapsed: arrived.elapsed(), outcome })
}

/// The function's module compiled, and whether it had to be compiled now
/// (after a restart, or pushed out of the cache).
async fn compiled(services: &Services, f: &Function) -> Result<(Arc<Compiled>, bool), ServiceError> {
    let slots = &services.functions.slots;
    if let Some(module) = slots.compiled(f.runnable) {
        return Ok((module, false));
    }
    let module = compile_stored(services, f.runnable)
        .await?
        .map_err(|e| ServiceError::Internal(format!("the stored module no longer compiles: {e}")))?;
    Ok((module, true))
}

/// Compiles the stored module `hash` (off the async threads) into the slots'
/// cache; the inner error is the engine's reason it cannot run.
async fn compile_stored(services: &Services, hash: Sha256Hash) -> Result<Result<Arc<Compiled>, String>, ServiceError> {
    let wasm = services.store.module(hash).await?.ok_or_else(|| ServiceError::NotFound(format!("module {hash}")))?;
    let slots = services.functions.slots.clone();
    tokio::task::spawn_blocking(move || slots.compile(hash, &wasm))
        .await
        .map_err(|e| ServiceError::Internal(format!("compiling the module failed: {e}")))
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
