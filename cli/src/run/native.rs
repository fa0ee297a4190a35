//! `idlecore run --engine native`: the task in this process, on the native
//! worker's engine, from the lease a coordinator would have sent for it.

use super::RunOutcome;
use anyhow::{anyhow, bail};
use idlecore_coordinator::domain::model::{FileMap, JobLimits, TaskInput};
use idlecore_coordinator::domain::{scheduler, tasks};
use idlecore_native_engine::{engine, run_lease, Executor, Stop};
use idlecore_protocol::{Lease, Sha256Hash, WorkerMessage};
use idlecore_wasi_host::task;
use std::time::{Duration, Instant};

/// Runs the task natively; its outcome and the files it left.
pub async fn run(module: Vec<u8>, input: TaskInput, limits: JobLimits) -> anyhow::Result<(RunOutcome, FileMap)> {
    // The checks a coordinator makes of the job, and its sandboxing.
    limits.validate().map_err(|e| anyhow!(e))?;
    tasks::check_task(&input).map_err(|e| anyhow!(e))?;
    tasks::check_writable(&input, limits.max_output_bytes).map_err(|e| anyhow!(e))?;
    let sandboxed = idlecore_coordinator::sandbox::instrument(&module).map_err(|e| anyhow!("the module was refused: {e}"))?;
    let hash = Sha256Hash::of(&sandboxed);
    // The lease a private coordinator gives the first task of its first job
    // (the seed too, so seeded runs print what `--engine browser` prints).
    let lease = Lease {
        lease: 1,
        job: 1,
        task: 0,
        module: hash,
        stdin: input.stdin.clone(),
        args: input.args.clone(),
        env: input.env.clone(),
        limits: limits.task_limits(),
        seed: scheduler::task_seed(1, 0),
        deterministic: limits.deterministic,
        dirs: scheduler::task_dirs(&input),
        blobs: vec![],
    };
    let timeout = Duration::from_millis(limits.timeout_ms as u64);
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("idlecore-run".into()).stack_size(engine::THREAD_STACK).spawn(move || {
        let _ = done.send(run_alone(&lease, &sandboxed, timeout));
    })?;
    let (report, timed_out) = ended.await?;
    match report {
        _ if timed_out => Ok((RunOutcome::Failed("timeout: the task passed its wall-clock deadline".into()), FileMap::default())),
        WorkerMessage::Result(r) => {
            super::print(&r.stdout, &r.stderr)?;
            Ok((RunOutcome::Exited(r.exit_code), FileMap(r.files.into_iter().map(|f| (f.path, f.data)).collect())))
        }
        WorkerMessage::Failure(f) => Ok((RunOutcome::Failed(format!("{}: {}", f.kind.as_str(), f.message)), FileMap::default())),
        other => bail!("the run ended with {other:?}"),
    }
}

/// Compiles and runs the lease as a worker's executor does; its report, and
/// whether the run was stopped at its deadline.
fn run_alone(lease: &Lease, wasm: &[u8], timeout: Duration) -> (WorkerMessage, bool) {
    let stop = Stop { deadline: Some(Instant::now() + timeout), ..Stop::default() };
    let module = match engine::runtime().compile(lease.module, wasm) {
        Ok(m) => m,
        Err(e) => return (task::report(lease.lease, Err(task::RunError::Invalid(e)), 0), false),
    };
    let report = run_lease(&mut Executor::default(), &module, lease, vec![], &stop);
    let timed_out = stop.due() && matches!(report, WorkerMessage::Failure(_));
    (report, timed_out)
}
