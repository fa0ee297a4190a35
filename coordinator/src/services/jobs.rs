//! What happens to jobs, between the HTTP API, worker sessions, the
//! scheduler and the store: creating and restoring them, recording what
//! workers report (a result is on disk before its task counts as finished),
//! retries, cancelling, and their status.

use super::{Event, ServiceError, Services};
use crate::domain::model::{JobChecks, JobLimits, JobRequest, JobRow, JobState, JobStatus, ResultRecord, TaskInput, TaskStatus};
use crate::domain::policy::Policy;
use crate::domain::scheduler::{counts_against_task, Finishing, NewJob, Outcome, Restored, ValidationStats};
use crate::domain::tasks::{check_task, check_writable, MAX_TASKS};
use crate::domain::WorkerId;
use crate::store::{StoreError, Write};
use idlecore_protocol::{FailureKind, TaskFailure, TaskResult};

/// Loads every unfinished job into the scheduler (at start-up). A job whose
/// every task has its record (the coordinator stopped between storing the
/// last one and marking the job) is marked completed instead.
pub async fn restore(services: &Services) -> Result<usize, StoreError> {
    let jobs = services.store.load_open_jobs()?;
    let n = jobs.len();
    for job in jobs {
        if job.finished.len() == job.tasks.len() && job.finished.iter().all(|f| *f) {
            end_job(services, job.id, JobState::Completed, None).await;
            continue;
        }
        let restored = Restored { finished: job.finished, failures: job.failures };
        let job = NewJob { id: job.id, module: job.runnable, limits: job.limits, policy: job.validation, tasks: job.tasks, restored };
        services.schedule(|s, now| s.add_job(job, now));
    }
    Ok(n)
}

pub async fn create(services: &Services, req: JobRequest) -> Result<u64, ServiceError> {
    let bad = ServiceError::BadRequest;
    if req.tasks.is_empty() {
        return Err(bad("a job needs at least one task".into()));
    }
    if req.tasks.len() > MAX_TASKS {
        return Err(bad(format!("a job has at most {MAX_TASKS} tasks")));
    }
    req.limits.validate().map_err(bad)?;
    let validation = req.validation.unwrap_or(services.config.validation);
    validation.validate().map_err(bad)?;
    if let Some(hash) = validation.comparator {
        let usable = services.comparators.get(&services.store, hash).await;
        usable.map_err(|e| bad(format!("validation.comparator: {e}")))?;
    }
    // Hashing large inputs is CPU work proportional to the job: off the async threads.
    let (threshold, mut tasks) = (services.config.blob_threshold, req.tasks);
    let (mut tasks, extracted) = tokio::task::spawn_blocking(move || {
        let extracted = super::blobs::extract(&mut tasks, threshold);
        (tasks, extracted)
    })
    .await
    .map_err(|e| bad(format!("reading the tasks failed: {e}")))?;
    for (i, t) in tasks.iter().enumerate() {
        check_task(t).map_err(|e| bad(format!("task {i}: {e}")))?;
    }
    super::blobs::resolve(&services.store, &mut tasks, &extracted).await?;
    for (i, t) in tasks.iter().enumerate() {
        check_writable(t, req.limits.max_output_bytes).map_err(|e| bad(format!("task {i}: {e}")))?;
    }
    admit(services, &tasks)?;
    let Some(runnable) = services.store.runnable(req.module).await? else {
        return Err(ServiceError::NotFound(format!("module {} (upload it first)", req.module)));
    };
    let stored: Vec<_> = extracted.into_iter().map(|(hash, bytes)| services.store.enqueue(Write::PutBlob { hash, bytes })).collect();
    for blob in stored {
        blob.await?;
    }
    let create = Write::CreateJob { module: req.module, runnable, limits: req.limits, validation, tasks: tasks.clone() };
    let id = services.store.write(create).await?;
    let n = tasks.len();
    let job = NewJob { id, module: runnable, limits: req.limits, policy: validation, tasks, restored: Restored::default() };
    services.schedule(|s, now| s.add_job(job, now));
    tracing::info!(job = id, tasks = n, "job accepted");
    Ok(id)
}

/// Seconds a job owner is told to wait when the coordinator is full.
const RETRY_AFTER_S: u32 = 10;

/// Admission control: a job is taken only if the coordinator can hold it in
/// memory next to the jobs it already has. (Concurrent requests may each pass
/// before either is added, so the bound is exceeded by at most their sizes.)
fn admit(services: &Services, tasks: &[TaskInput]) -> Result<(), ServiceError> {
    let cfg = &services.config;
    let bytes: usize = tasks.iter().map(TaskInput::size).sum();
    if tasks.len() > cfg.max_pending_tasks || bytes > cfg.max_pending_bytes {
        return Err(ServiceError::TooLarge(format!(
            "a job of {} tasks and {bytes} input bytes is more than this coordinator holds at once \
             ({} tasks, {} bytes); split it",
            tasks.len(),
            cfg.max_pending_tasks,
            cfg.max_pending_bytes
        )));
    }
    let (pending, held) = services.schedule(|s, _| s.load());
    if pending + tasks.len() > cfg.max_pending_tasks || held + bytes > cfg.max_pending_bytes {
        return Err(ServiceError::Busy(
            format!(
                "the coordinator is full ({pending} unfinished tasks, {held} input bytes held; limits {} and {}); \
                 retry in {RETRY_AFTER_S} s",
                cfg.max_pending_tasks, cfg.max_pending_bytes
            ),
            RETRY_AFTER_S,
        ));
    }
    Ok(())
}

/// A result's files, by guest path.
fn output_files(files: Vec<idlecore_protocol::TaskFile>) -> crate::domain::model::FileMap {
    crate::domain::model::FileMap(files.into_iter().map(|f| (f.path, f.data)).collect())
}

/// Claims a reported lease for `worker`, in the order reports arrive. `None`
/// for a stale or duplicate report, which is acknowledged and otherwise ignored.
pub fn claim(services: &Services, worker: WorkerId, lease: crate::domain::LeaseId) -> Option<Finishing> {
    let claimed = services.schedule(|s, now| s.begin_finish(worker, lease, now));
    if claimed.is_none() {
        tracing::debug!(lease, "stale or duplicate report ignored");
    }
    claimed
}

/// Stores the result of a claimed lease; the task is finished once it is on disk.
pub async fn record_result(services: &Services, f: Finishing, r: TaskResult) -> Result<(), StoreError> {
    let limit = services.schedule(|s, _| s.limits(f.job)).map(|l| l.max_output_bytes as usize);
    let size = r.stdout.len() + r.stderr.len() + r.files.iter().map(|f| f.data.len()).sum::<usize>();
    if limit.is_some_and(|max| size > max) {
        let failure = TaskFailure {
            lease: r.lease,
            kind: FailureKind::OutputLimit,
            message: format!("result of {size} bytes exceeds the job's output limit"),
        };
        return record_failure(services, f, failure).await;
    }
    let record = ResultRecord {
        task: f.task,
        status: TaskStatus::Done,
        exit_code: Some(r.exit_code),
        stdout: r.stdout,
        stderr: r.stderr,
        elapsed_ms: r.elapsed_ms,
        fuel_used: r.fuel_used,
        files: output_files(r.files),
        error: None,
    };
    let record = if f.validated {
        let mut record = record;
        loop {
            let vote = super::comparisons::vote(services, &f, &record).await;
            match services.schedule(|s, now| s.report(f.lease, vote, record, now)) {
                Outcome::Accept(r) | Outcome::Failed(r) => break r,
                Outcome::Counted => return Ok(()),
                Outcome::Recompare(r) => record = r,
            }
        }
    } else {
        record
    };
    store_final(services, &f, record).await
}

/// Records a claimed lease's failure, then retries the task or, after its
/// last attempt, stores it as failed with every attempt's reason.
pub async fn record_failure(services: &Services, f: Finishing, failure: TaskFailure) -> Result<(), StoreError> {
    let counted = counts_against_task(failure.kind);
    if f.spot {
        // A spot check that failed to run proves nothing either way.
        tracing::debug!(job = f.job, task = f.task, kind = failure.kind.as_str(), "spot check failed to run: {}", failure.message);
        services.schedule(|s, now| s.drop_spot_check(f.lease, now));
        return Ok(());
    }
    if failure.kind == FailureKind::Withdrawn {
        // Given back unrun (paused, budget lowered): nothing worth keeping.
        tracing::debug!(job = f.job, task = f.task, "lease withdrawn: {}", failure.message);
        services.schedule(|s, now| s.withdrawn(f.lease, now));
        return Ok(());
    }
    tracing::info!(job = f.job, task = f.task, kind = failure.kind.as_str(), counted, "task attempt failed: {}", failure.message);
    let put = Write::PutFailure { job: f.job, task: f.task, kind: failure.kind.as_str().into(), message: failure.message };
    if let Err(e) = services.store.write(put).await {
        services.schedule(|s, now| s.retry(f.lease, false, now));
        return Err(e);
    }
    if !(counted && f.failures + 1 >= f.max_attempts) {
        services.schedule(|s, now| s.retry(f.lease, counted, now));
        return Ok(());
    }
    let reasons = match services.store.failures(f.job, f.task).await {
        Ok(r) => r,
        Err(e) => {
            services.schedule(|s, now| s.retry(f.lease, false, now));
            return Err(e);
        }
    };
    let error = reasons.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("\n");
    store_final(services, &f, ResultRecord::failed(f.task, error)).await
}

/// Stores a task's final record, then marks it finished (a job this
/// completes is marked and announced with the scheduler's output). A record
/// that could not be stored gives the task to someone else rather than lose it.
async fn store_final(services: &Services, f: &Finishing, record: ResultRecord) -> Result<(), StoreError> {
    if let Err(e) = services.store.write(Write::PutResult { job: f.job, record }).await {
        services.schedule(|s, now| s.retry(f.lease, false, now));
        return Err(e);
    }
    services.schedule(|s, now| s.finish(f.lease, now));
    let _ = services.events.send(Event::Finished { job: f.job, task: f.task });
    Ok(())
}

/// Records that a job ended: the write is queued at once (in order with
/// other writes); the returned future waits for it, then announces the end.
pub fn end_job(
    services: &Services,
    job: u64,
    to: JobState,
    checks: Option<ValidationStats>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let write = services.store.enqueue(Write::SetJobState { job, state: to, checks });
    let events = services.events.clone();
    async move {
        if let Err(e) = write.await {
            // The job is still derivable as complete from its results on restart.
            tracing::error!(job, error = %e, "could not record job state");
        }
        tracing::info!(job, state = to.as_str(), "job ended");
        let _ = events.send(Event::JobEnded { job });
        // The job's tasks have left the scheduler; their memory can go back
        // (in the background: nothing waits for it).
        tokio::spawn(super::return_free_memory());
    }
}

pub async fn cancel(services: &Services, job: u64) -> Result<JobStatus, ServiceError> {
    let current = status(services, job).await?;
    // A job that finished meanwhile is no longer in the scheduler: it stays completed.
    let cancelled = services.schedule(|s, now| {
        let checks = s.validation(job).map(|(_, stats)| stats);
        s.cancel_job(job, now).then_some(checks)
    });
    if let (true, Some(checks)) = (current.state == JobState::Running.as_str(), cancelled) {
        end_job(services, job, JobState::Cancelled, checks).await;
    }
    status(services, job).await
}

pub async fn status(services: &Services, job: u64) -> Result<JobStatus, ServiceError> {
    let row = services.store.job_rows(Some(job)).await?.pop().ok_or_else(|| ServiceError::NotFound(format!("job {job}")))?;
    to_status(services, row)
}

pub async fn list(services: &Services) -> Result<Vec<JobStatus>, ServiceError> {
    services.store.job_rows(None).await?.into_iter().map(|r| to_status(services, r)).collect()
}

fn to_status(services: &Services, row: JobRow) -> Result<JobStatus, ServiceError> {
    let limits: JobLimits = serde_json::from_str(&row.limits).unwrap_or_default();
    let validation: Policy = serde_json::from_str(&row.validation).unwrap_or(Policy::OFF);
    let module = row.module.parse().map_err(|e| StoreError::Corrupt(format!("job {} module {:?}: {e}", row.id, row.module)))?;
    let (live, in_flight) = services.schedule(|s, _| (s.validation(row.id), s.in_flight(row.id).unwrap_or(0)));
    let stats = match live {
        Some((_, stats)) => Some(stats),
        None => row.checks.as_deref().and_then(|c| serde_json::from_str(c).ok()),
    };
    let decided = (row.done + row.failed).max(1) as f64;
    let checks = stats.filter(|_| validation.is_on()).map(|stats| JobChecks { stats, overhead: stats.results.max(1) as f64 / decided });
    Ok(JobStatus {
        id: row.id,
        module,
        state: row.state,
        tasks: row.tasks,
        done: row.done,
        failed: row.failed,
        in_flight,
        created_at: row.created_at,
        limits,
        validation,
        checks,
    })
}
