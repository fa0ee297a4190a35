//! What happens to jobs, between the API, worker sessions, the scheduler and the store.

use crate::error::ApiError;
use crate::model::{
    JobChecks, JobLimits, JobRequest, JobState, JobStatus, ResultRecord, TaskStatus,
};
use crate::scheduler::{counts_against_task, Finishing, Outcome, WorkerId};
use crate::state::{AppState, Event};
use crate::store::{StoreError, Write};
use crate::validate::Policy;
use idlecore_protocol::{FailureKind, ModuleHash, TaskFailure, TaskResult};

/// Most tasks in one job.
pub const MAX_TASKS: usize = 1_000_000;

pub fn parse_hash(hex_hash: &str) -> Result<ModuleHash, ApiError> {
    let bytes = hex::decode(hex_hash)
        .map_err(|_| ApiError::BadRequest(format!("module hash {hex_hash:?} is not hex")))?;
    bytes.try_into().map_err(|_| {
        ApiError::BadRequest(format!(
            "module hash {hex_hash:?} is not 32 bytes of SHA-256"
        ))
    })
}

/// Loads every unfinished job into the scheduler (at start-up). A job whose
/// every task has its record (the coordinator stopped between storing the
/// last one and marking the job) is marked completed instead.
pub async fn restore(state: &AppState) -> Result<usize, StoreError> {
    let jobs = state.store.load_open_jobs()?;
    let n = jobs.len();
    for job in jobs {
        if job.finished.len() == job.tasks.len() && job.finished.iter().all(|f| *f) {
            end_job(state, job.id, JobState::Completed, None).await;
            continue;
        }
        let module = parse_hash(&job.runnable).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        state.scheduler().add_validated_job(
            job.id,
            module,
            job.limits,
            job.validation,
            job.tasks,
            job.finished,
            job.failures,
        );
    }
    Ok(n)
}

pub async fn create(state: &AppState, req: JobRequest) -> Result<u64, ApiError> {
    let module_hex = hex::encode(parse_hash(&req.module)?);
    if req.tasks.is_empty() {
        return Err(ApiError::BadRequest("a job needs at least one task".into()));
    }
    if req.tasks.len() > MAX_TASKS {
        return Err(ApiError::BadRequest(format!(
            "a job has at most {MAX_TASKS} tasks"
        )));
    }
    req.limits.validate().map_err(ApiError::BadRequest)?;
    let validation = req.validation.unwrap_or(state.config.validation);
    validation.validate().map_err(ApiError::BadRequest)?;
    if let Some(hash) = validation.comparator {
        let usable = state.comparators.get(&state.store, hash).await;
        usable.map_err(|e| ApiError::BadRequest(format!("validation.comparator: {e}")))?;
    }
    // Hashing large inputs is CPU work proportional to the job: off the async threads.
    let (threshold, mut tasks) = (state.config.blob_threshold, req.tasks);
    let (mut tasks, extracted) = tokio::task::spawn_blocking(move || {
        let extracted = crate::input_blobs::extract(&mut tasks, threshold);
        (tasks, extracted)
    })
    .await
    .map_err(|e| ApiError::BadRequest(format!("reading the tasks failed: {e}")))?;
    for (i, t) in tasks.iter().enumerate() {
        check_task(t).map_err(|e| ApiError::BadRequest(format!("task {i}: {e}")))?;
    }
    crate::input_blobs::resolve(&state.store, &mut tasks, &extracted).await?;
    for (i, t) in tasks.iter().enumerate() {
        check_writable(t, req.limits.max_output_bytes).map_err(|e| ApiError::BadRequest(format!("task {i}: {e}")))?;
    }
    admit(state, &tasks)?;
    let Some(runnable_hex) = state.store.runnable(&module_hex).await? else {
        return Err(ApiError::NotFound(format!(
            "module {module_hex} (upload it first)"
        )));
    };
    let runnable = parse_hash(&runnable_hex)?;
    let stored: Vec<_> = extracted
        .into_iter()
        .map(|(hash, bytes)| {
            state.store.enqueue(Write::PutBlob {
                hash: hex::encode(hash),
                bytes,
            })
        })
        .collect();
    for blob in stored {
        blob.await?;
    }
    let id = state
        .store
        .write(Write::CreateJob {
            module: module_hex,
            runnable: runnable_hex,
            limits: req.limits,
            validation,
            tasks: tasks.clone(),
        })
        .await?;
    let n = tasks.len();
    state.scheduler().add_validated_job(
        id,
        runnable,
        req.limits,
        validation,
        tasks,
        vec![],
        vec![],
    );
    tracing::info!(job = id, tasks = n, "job accepted");
    Ok(id)
}

/// Seconds a job owner is told to wait when the coordinator is full.
const RETRY_AFTER_S: u32 = 10;

/// Admission control: a job is taken only if the coordinator can hold it in
/// memory next to the jobs it already has. (Concurrent requests may each pass
/// before either is added, so the bound is exceeded by at most their sizes.)
fn admit(state: &AppState, tasks: &[crate::model::TaskInput]) -> Result<(), ApiError> {
    let cfg = &state.config;
    let bytes: usize = tasks.iter().map(crate::model::TaskInput::size).sum();
    if tasks.len() > cfg.max_pending_tasks || bytes > cfg.max_pending_bytes {
        return Err(ApiError::TooLarge(format!(
            "a job of {} tasks and {bytes} input bytes is more than this coordinator holds at once \
             ({} tasks, {} bytes); split it",
            tasks.len(),
            cfg.max_pending_tasks,
            cfg.max_pending_bytes
        )));
    }
    let (pending, held) = state.scheduler().load();
    if pending + tasks.len() > cfg.max_pending_tasks || held + bytes > cfg.max_pending_bytes {
        return Err(ApiError::Busy(
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

/// A task's input must fit in one lease frame with the protocol's field limits.
fn check_task(t: &crate::model::TaskInput) -> Result<(), String> {
    use idlecore_protocol::limits::*;
    let (stdin, args, env) = (&t.stdin, &t.args, &t.env);
    let all_files = || std::iter::once(&t.files).chain(t.dirs.iter().map(|d| &d.files));
    let all_blobs = || std::iter::once(&t.file_blobs).chain(t.dirs.iter().map(|d| &d.file_blobs));
    let file_bytes: usize = all_files().flat_map(|m| m.0.values()).map(Vec::len).sum();
    if t.stdin_blob.is_some() && !stdin.is_empty() {
        return Err("give `stdin` or `stdin_blob`, not both".into());
    }
    if !t.dirs.is_empty() && !t.files.is_empty() {
        return Err(
            "`files` fill the default `/input`; a task with its own `dirs` puts files in them"
                .into(),
        );
    }
    all_blobs()
        .flat_map(|m| m.0.keys())
        .try_for_each(|p| check_relative(p))?;
    let both = |f: &crate::model::FileMap, b: &crate::model::BlobFiles| {
        f.0.keys().find(|p| b.0.contains_key(*p)).cloned()
    };
    let twice = both(&t.files, &t.file_blobs)
        .or_else(|| t.dirs.iter().find_map(|d| both(&d.files, &d.file_blobs)));
    if let Some(p) = twice {
        return Err(format!("file {p:?} is in both `files` and `file_blobs`"));
    }
    if !t.dirs.is_empty() && !t.file_blobs.is_empty() {
        return Err(
            "`file_blobs` fill the default `/input`; a task with its own `dirs` puts blobs in them"
                .into(),
        );
    }
    // What the lease frame carries: inline bytes, every path, and each blob's hash and size.
    let blob_count: usize = all_blobs().map(|m| m.0.len()).sum::<usize>() + usize::from(t.stdin_blob.is_some());
    let paths: usize = all_files().flat_map(|m| m.0.keys()).chain(all_blobs().flat_map(|m| m.0.keys())).map(String::len).sum();
    if stdin.len() + file_bytes + paths + blob_count * 48 > MAX_FRAME_BYTES - 256 * 1024 {
        return Err(format!(
            "stdin, files and their paths together are larger than {} bytes",
            MAX_FRAME_BYTES - 256 * 1024
        ));
    }
    let layouts = std::iter::once((&t.files, &t.file_blobs)).chain(t.dirs.iter().map(|d| (&d.files, &d.file_blobs)));
    for (files, blobs) in layouts {
        check_tree(files.0.keys().chain(blobs.0.keys()))?;
    }
    if all_files().map(|m| m.0.len()).sum::<usize>() + all_blobs().map(|m| m.0.len()).sum::<usize>()
        > MAX_FILES
    {
        return Err(format!("at most {MAX_FILES} files"));
    }
    all_files()
        .flat_map(|m| m.0.keys())
        .try_for_each(|p| check_relative(p))?;
    if t.dirs.len() > MAX_DIRS {
        return Err(format!("at most {MAX_DIRS} dirs"));
    }
    let mut guests: Vec<&str> = vec![];
    for d in &t.dirs {
        // `.` is the task's working directory, as in `wasmtime run --dir .`.
        if d.guest != "." {
            let inner = d.guest.strip_prefix('/').ok_or_else(|| {
                format!("dir {:?} must be `.` or an absolute guest path", d.guest)
            })?;
            if inner.is_empty() {
                return Err("dir `/` is not allowed; name a directory such as `/data`".into());
            }
            check_relative(inner)?;
        }
        if guests.contains(&d.guest.as_str()) {
            return Err(format!("dir {:?} is given twice", d.guest));
        }
        guests.push(&d.guest);
    }
    if stdin.len() > MAX_FRAME_BYTES - 256 * 1024 {
        return Err(format!(
            "stdin is larger than {} bytes",
            MAX_FRAME_BYTES - 256 * 1024
        ));
    }
    if args.len() > MAX_ARGS || env.len() > MAX_ENV {
        return Err(format!("at most {MAX_ARGS} args and {MAX_ENV} env entries"));
    }
    let text: usize = args.iter().map(String::len).sum::<usize>()
        + env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if args
        .iter()
        .chain(env.iter().flat_map(|(k, v)| [k, v]))
        .any(|s| s.len() > MAX_ARG_BYTES)
        || text > 128 * 1024
    {
        return Err(format!(
            "an arg or env entry exceeds {MAX_ARG_BYTES} bytes, or all exceed 128 KiB"
        ));
    }
    if env.iter().any(|(k, _)| k.is_empty() || k.contains('=')) {
        return Err("env names must be non-empty and contain no '='".into());
    }
    Ok(())
}

/// A result's files, by guest path.
fn output_files(files: Vec<idlecore_protocol::TaskFile>) -> crate::model::FileMap {
    crate::model::FileMap(files.into_iter().map(|f| (f.path, f.data)).collect())
}

/// Files in a writable directory come back in the result (changed or not):
/// they must fit the output limit, or every run would fail.
fn check_writable(t: &crate::model::TaskInput, max_output: u32) -> Result<(), String> {
    for d in t.dirs.iter().filter(|d| d.writable) {
        let inline: u64 = d.files.0.values().map(|v| v.len() as u64).sum();
        let bytes = inline + d.file_blobs.0.values().map(|b| b.size).sum::<u64>();
        if bytes > max_output as u64 {
            return Err(format!(
                "the files of writable dir {:?} ({bytes} bytes) come back in its result, past limits.max_output_bytes ({max_output})",
                d.guest
            ));
        }
    }
    Ok(())
}

/// The files of one directory must make a tree: no file where another one's
/// directory would be (`a` beside `a/b`).
fn check_tree<'a>(paths: impl Iterator<Item = &'a String>) -> Result<(), String> {
    let all: std::collections::HashSet<&str> = paths.map(String::as_str).collect();
    for p in &all {
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            let parent = &p[..at + i];
            if all.contains(parent) {
                return Err(format!("file {p:?} is inside {parent:?}, which is a file too"));
            }
            at += i + 1;
        }
    }
    Ok(())
}

fn check_relative(path: &str) -> Result<(), String> {
    let bad = path.is_empty()
        || path.len() > idlecore_protocol::limits::MAX_PATH_BYTES
        || path.starts_with('/')
        || path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        return Err(format!(
            "file path {path:?} must be relative, like `dir/name.txt`, without `.` or `..`"
        ));
    }
    Ok(())
}

/// Claims a reported lease for `worker`, in the order reports arrive. `None`
/// for a stale or duplicate report, which is acknowledged and otherwise ignored.
pub fn claim(state: &AppState, worker: WorkerId, lease: u64) -> Option<Finishing> {
    let claimed = state.scheduler().begin_finish(worker, lease);
    if claimed.is_none() {
        tracing::debug!(lease, "stale or duplicate report ignored");
    }
    claimed
}

/// Stores the result of a claimed lease; the task is finished once it is on disk.
pub async fn record_result(
    state: &AppState,
    f: Finishing,
    r: TaskResult,
) -> Result<(), StoreError> {
    let limit = state
        .scheduler()
        .limits(f.job)
        .map(|l| l.max_output_bytes as usize);
    let size =
        r.stdout.len() + r.stderr.len() + r.files.iter().map(|f| f.data.len()).sum::<usize>();
    if limit.is_some_and(|max| size > max) {
        let failure = TaskFailure {
            lease: r.lease,
            kind: FailureKind::OutputLimit,
            message: format!("result of {size} bytes exceeds the job's output limit"),
        };
        return record_failure(state, f, failure).await;
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
            let vote = crate::comparators::vote(state, &f, &record).await;
            match state.scheduler().report(f.lease, vote, record) {
                Outcome::Accept(r) | Outcome::Failed(r) => break r,
                Outcome::Counted => return Ok(()),
                Outcome::Recompare(r) => record = r,
            }
        }
    } else {
        record
    };
    if let Err(e) = state
        .store
        .write(Write::PutResult { job: f.job, record })
        .await
    {
        // Not durable: give the task to someone else rather than lose it.
        state.scheduler().retry(f.lease, false);
        return Err(e);
    }
    finish(state, f.job, f.task, f.lease).await;
    Ok(())
}

/// Records a claimed lease's failure, then retries the task or, after its
/// last attempt, stores it as failed with every attempt's reason.
pub async fn record_failure(
    state: &AppState,
    f: Finishing,
    failure: TaskFailure,
) -> Result<(), StoreError> {
    let counted = counts_against_task(failure.kind);
    if f.spot {
        // A spot check that failed to run proves nothing either way.
        tracing::debug!(
            job = f.job,
            task = f.task,
            kind = failure.kind.as_str(),
            "spot check failed to run: {}",
            failure.message
        );
        state.scheduler().drop_spot_check(f.lease);
        return Ok(());
    }
    if failure.kind == FailureKind::Withdrawn {
        // Given back unrun (paused, budget lowered): nothing worth keeping.
        tracing::debug!(
            job = f.job,
            task = f.task,
            "lease withdrawn: {}",
            failure.message
        );
        state.scheduler().withdrawn(f.lease);
        return Ok(());
    }
    tracing::info!(
        job = f.job,
        task = f.task,
        kind = failure.kind.as_str(),
        counted,
        "task attempt failed: {}",
        failure.message
    );
    let logged = state
        .store
        .write(Write::PutFailure {
            job: f.job,
            task: f.task,
            kind: failure.kind.as_str().into(),
            message: failure.message,
        })
        .await;
    if let Err(e) = logged {
        state.scheduler().retry(f.lease, false);
        return Err(e);
    }
    if !(counted && f.failures + 1 >= f.max_attempts) {
        state.scheduler().retry(f.lease, counted);
        return Ok(());
    }
    let reasons = match state.store.failures(f.job, f.task).await {
        Ok(r) => r,
        Err(e) => {
            state.scheduler().retry(f.lease, false);
            return Err(e);
        }
    };
    let error = reasons
        .iter()
        .map(|(k, m)| format!("{k}: {m}"))
        .collect::<Vec<_>>()
        .join("\n");
    let record = ResultRecord::failed(f.task, error);
    if let Err(e) = state
        .store
        .write(Write::PutResult { job: f.job, record })
        .await
    {
        state.scheduler().retry(f.lease, false);
        return Err(e);
    }
    finish(state, f.job, f.task, f.lease).await;
    Ok(())
}

async fn finish(state: &AppState, job: u64, task: u32, lease: u64) {
    // A job this completes is marked and announced by the scheduler's guard.
    state.scheduler().finish(lease);
    let _ = state.events.send(Event::Finished { job, task });
}

/// Records that a job ended: the write is queued at once (in order with
/// other writes); the returned future waits for it, then announces the end.
pub fn end_job(
    state: &AppState,
    job: u64,
    to: JobState,
    checks: Option<crate::scheduler::ValidationStats>,
) -> impl std::future::Future<Output = ()> + use<> {
    let write = state.store.enqueue(Write::SetJobState {
        job,
        state: to,
        checks,
    });
    let events = state.events.clone();
    async move {
        if let Err(e) = write.await {
            // The job is still derivable as complete from its results on restart.
            tracing::error!(job, error = %e, "could not record job state");
        }
        tracing::info!(job, state = to.as_str(), "job ended");
        let _ = events.send(Event::JobEnded { job });
        // The job's tasks have left the scheduler; their memory can go back
        // (in the background: nothing waits for it).
        tokio::spawn(crate::server::return_free_memory());
    }
}

pub async fn cancel(state: &AppState, job: u64) -> Result<JobStatus, ApiError> {
    let current = status(state, job).await?;
    // A job that finished meanwhile is no longer in the scheduler: it stays completed.
    let cancelled = {
        let mut s = state.scheduler();
        let checks = s.validation(job).map(|(_, stats)| stats);
        s.cancel_job(job).then_some(checks)
    };
    if let (true, Some(checks)) = (current.state == JobState::Running.as_str(), cancelled) {
        end_job(state, job, JobState::Cancelled, checks).await;
    }
    status(state, job).await
}

pub async fn status(state: &AppState, job: u64) -> Result<JobStatus, ApiError> {
    let row = state
        .store
        .job_rows(Some(job))
        .await?
        .pop()
        .ok_or_else(|| ApiError::NotFound(format!("job {job}")))?;
    Ok(to_status(state, row))
}

pub async fn list(state: &AppState) -> Result<Vec<JobStatus>, ApiError> {
    Ok(state
        .store
        .job_rows(None)
        .await?
        .into_iter()
        .map(|r| to_status(state, r))
        .collect())
}

fn to_status(state: &AppState, row: crate::model::JobRow) -> JobStatus {
    let limits: JobLimits = serde_json::from_str(&row.limits).unwrap_or_default();
    let validation: Policy = serde_json::from_str(&row.validation).unwrap_or(Policy::OFF);
    let (live, in_flight) = {
        let s = state.scheduler();
        (s.validation(row.id), s.in_flight(row.id).unwrap_or(0))
    };
    let stats = match live {
        Some((_, stats)) => Some(stats),
        None => row
            .checks
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok()),
    };
    let decided = (row.done + row.failed).max(1) as f64;
    let checks = stats.filter(|_| validation.is_on()).map(|stats| JobChecks {
        stats,
        overhead: stats.results.max(1) as f64 / decided,
    });
    JobStatus {
        id: row.id,
        module: row.module,
        state: row.state,
        tasks: row.tasks,
        done: row.done,
        failed: row.failed,
        in_flight,
        created_at: row.created_at,
        limits,
        validation,
        checks,
    }
}
