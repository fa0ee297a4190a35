//! The write path: every durable write, and the writer thread that applies
//! them in batches, one transaction (and one fsync) per batch.

use super::{StoreError, StoreResult};
use crate::domain::functions::Function;
use crate::domain::model::{JobLimits, JobState, ResultRecord, TaskInput};
use crate::domain::policy::Policy;
use crate::domain::scheduler::ValidationStats;
use idlecore_protocol::Sha256Hash;
use rusqlite::{params, Connection};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// One durable write. Each answers with a number: the new job id for
/// `CreateJob`, rows changed otherwise.
pub enum Write {
    SetSetting {
        key: String,
        value: String,
    },
    /// `runnable`: hash of the sandboxed module that workers run for this one.
    PutModule {
        hash: Sha256Hash,
        bytes: Vec<u8>,
        runnable: Sha256Hash,
    },
    /// A task input uploaded by hash (stored once, however many tasks name it).
    PutBlob {
        hash: Sha256Hash,
        bytes: Vec<u8>,
    },
    CreateJob {
        module: Sha256Hash,
        runnable: Sha256Hash,
        limits: JobLimits,
        validation: Policy,
        tasks: Vec<TaskInput>,
    },
    PutResult {
        job: u64,
        record: ResultRecord,
    },
    /// An accepted result turned out doubtful: its task is decided again.
    VoidResult {
        job: u64,
        task: u32,
    },
    PutFailure {
        job: u64,
        task: u32,
        kind: String,
        message: String,
    },
    /// A function deployed, or deployed again under its name.
    PutFunction(Function),
    DeleteFunction {
        name: String,
    },
    /// `checks`: the job's final validation figures, if it had validation.
    SetJobState {
        job: u64,
        state: JobState,
        checks: Option<ValidationStats>,
    },
}

pub(super) type Pending = (Write, oneshot::Sender<StoreResult<u64>>);

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Runs one statement, compiled once per connection (SQLite's parser was a
/// visible share of storing each result).
fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn apply(conn: &Connection, write: &Write) -> StoreResult<u64> {
    let n = match write {
        Write::SetSetting { key, value } => execute(
            conn,
            "INSERT INTO settings(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?,
        Write::PutModule { hash, bytes, runnable } => execute(
            conn,
            "INSERT OR IGNORE INTO modules(hash, bytes, size, runnable) VALUES (?1, ?2, ?3, ?4)",
            params![hash.to_hex(), bytes, bytes.len() as i64, runnable.to_hex()],
        )?,
        Write::PutBlob { hash, bytes } => execute(
            conn,
            "INSERT OR IGNORE INTO blobs(hash, bytes, size) VALUES (?1, ?2, ?3)",
            params![hash.to_hex(), bytes, bytes.len() as i64],
        )?,
        Write::CreateJob { module, runnable, limits, validation, tasks } => {
            let limits_json = serde_json::to_string(limits).expect("limits serialize");
            let validation_json = serde_json::to_string(validation).expect("policy serializes");
            execute(
                conn,
                "INSERT INTO jobs(module, runnable, limits, validation, task_count, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    module.to_hex(),
                    runnable.to_hex(),
                    limits_json,
                    validation_json,
                    tasks.len() as i64,
                    JobState::Running.as_str(),
                    now_secs()
                ],
            )?;
            let job = conn.last_insert_rowid();
            let mut insert = conn.prepare_cached("INSERT INTO tasks(job, idx, stdin, args, env, files) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            for (idx, t) in tasks.iter().enumerate() {
                insert.execute(params![
                    job,
                    idx as i64,
                    t.stdin,
                    serde_json::to_string(&t.args).expect("args serialize"),
                    serde_json::to_string(&t.env).expect("env serialize"),
                    serde_json::json!({ "files": t.files, "dirs": t.dirs, "stdin_blob": t.stdin_blob, "file_blobs": t.file_blobs })
                        .to_string(),
                ])?;
            }
            return Ok(job as u64);
        }
        Write::PutResult { job, record } => execute(
            conn,
            "INSERT OR IGNORE INTO results(job, idx, status, exit_code, stdout, stderr, elapsed_ms, fuel_used, error, files)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                *job as i64,
                record.task,
                record.status.as_str(),
                record.exit_code,
                record.stdout,
                record.stderr,
                record.elapsed_ms,
                record.fuel_used as i64,
                record.error,
                serde_json::to_string(&record.files).expect("files serialize"),
            ],
        )?,
        Write::PutFailure { job, task, kind, message } => execute(
            conn,
            "INSERT INTO failures(job, idx, kind, message) VALUES (?1, ?2, ?3, ?4)",
            params![*job as i64, task, kind, message],
        )?,
        Write::SetJobState { job, state, checks } => execute(
            conn,
            "UPDATE jobs SET state = ?2, checks = COALESCE(?3, checks) WHERE id = ?1",
            params![*job as i64, state.as_str(), checks.map(|c| serde_json::to_string(&c).expect("stats serialize"))],
        )?,
        Write::PutFunction(f) => execute(
            conn,
            "INSERT INTO functions(name, spec) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
            params![f.name, serde_json::to_string(f).expect("function serializes")],
        )?,
        Write::DeleteFunction { name } => execute(conn, "DELETE FROM functions WHERE name = ?1", params![name])?,
        Write::VoidResult { job, task } => execute(conn, "DELETE FROM results WHERE job = ?1 AND idx = ?2", params![*job as i64, task])?,
    };
    Ok(n as u64)
}

/// The writer thread: one transaction per drained batch.
pub(super) fn writer_loop(conn: Connection, rx: mpsc::Receiver<Pending>) {
    const MAX_BATCH: usize = 512;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let outcome: StoreResult<Vec<StoreResult<u64>>> = (|| {
            execute(&conn, "BEGIN IMMEDIATE", [])?;
            let each = batch.iter().map(|(w, _)| apply(&conn, w)).collect();
            let applied = started.elapsed();
            execute(&conn, "COMMIT", [])?;
            tracing::debug!(
                writes = batch.len(),
                applied_us = applied.as_micros() as u64,
                total_us = started.elapsed().as_micros() as u64,
                "committed"
            );
            Ok(each)
        })();
        match outcome {
            Ok(each) => {
                for ((_, reply), r) in batch.into_iter().zip(each) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                tracing::error!(error = %e, "commit failed; {} writes refused", batch.len());
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Corrupt(format!("commit failed: {e}"))));
                }
            }
        }
    }
}
