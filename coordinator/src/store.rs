//! Durable state in SQLite.
//!
//! All writes go through one writer thread that drains its queue into a single
//! transaction and commits it before answering anyone (group commit): a caller
//! whose write returned `Ok` knows it is on disk, and a burst of results costs
//! one fsync, not one each. Reads use their own connection (WAL mode lets them
//! run beside the writer).

mod schema;
mod writes;

pub use writes::Write;

use crate::domain::model::{JobLimits, JobState, ResultRecord, TaskInput};
use crate::domain::policy::Policy;
use idlecore_protocol::Sha256Hash;
use rusqlite::{params, Connection, OptionalExtension};
use schema::{migrate, open, SCHEMA};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;
use writes::{writer_loop, Pending};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Pending>,
    reader: Arc<Mutex<Connection>>,
}

/// A job as loaded at start-up, with what is still to be done.
pub struct StoredJob {
    pub id: u64,
    /// Hash of the sandboxed module the tasks run.
    pub runnable: Sha256Hash,
    pub limits: JobLimits,
    pub validation: Policy,
    pub state: JobState,
    pub tasks: Vec<TaskInput>,
    /// Per task: already has a final record (done or failed).
    pub finished: Vec<bool>,
    /// Per task: failures recorded so far.
    pub failures: Vec<u32>,
}

fn blob_size(c: &Connection, hash: &str) -> rusqlite::Result<Option<u64>> {
    c.query_row("SELECT size FROM blobs WHERE hash = ?1 UNION ALL SELECT size FROM modules WHERE hash = ?1 LIMIT 1", [hash], |r| {
        r.get::<_, i64>(0).map(|n| n as u64)
    })
    .optional()
}

/// The data directory and the database are the owner's alone (results,
/// inputs and the token's hash are in them): the directory 0700, the
/// database created 0600, and both made so if an earlier start left them
/// open to others. SQLite's journal files take the database's mode.
fn keep_private(dir: &Path, db: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let fail = |what: &Path, e: std::io::Error| StoreError::Corrupt(format!("cannot restrict {} to its owner: {e}", what.display()));
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| fail(dir, e))?;
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(db).map_err(|e| fail(db, e))?;
        std::fs::set_permissions(db, std::fs::Permissions::from_mode(0o600)).map_err(|e| fail(db, e))?;
    }
    Ok(())
}

impl Store {
    pub fn open(dir: &Path) -> StoreResult<Store> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("idlecore.sqlite3");
        keep_private(dir, &path)?;
        let writer_conn = open(&path)?;
        writer_conn.execute_batch(SCHEMA)?;
        migrate(&writer_conn)?;
        let reader = open(&path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("store-writer".into()).spawn(move || writer_loop(writer_conn, rx)).expect("spawn store writer");
        Ok(Store { writer: tx, reader: Arc::new(Mutex::new(reader)) })
    }

    /// Queues a write now (writes commit in the order queued) and returns
    /// what waits for its commit.
    pub fn enqueue(&self, write: Write) -> impl std::future::Future<Output = StoreResult<u64>> + use<> {
        let (reply, done) = oneshot::channel();
        let sent = self.writer.send((write, reply)).map_err(|_| StoreError::WriterGone);
        async move {
            sent?;
            done.await.map_err(|_| StoreError::WriterGone)?
        }
    }

    /// Queues a write and waits until it is committed.
    pub async fn write(&self, write: Write) -> StoreResult<u64> {
        let (reply, done) = oneshot::channel();
        self.writer.send((write, reply)).map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs a read on the read connection, off the async threads.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static) -> StoreResult<T> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader.lock().expect("reader lock")))
            .await
            .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }

    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        let key = key.to_owned();
        self.read(move |c| Ok(c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)).await
    }

    pub async fn module(&self, hash: Sha256Hash) -> StoreResult<Option<Vec<u8>>> {
        let hash = hash.to_hex();
        self.read(move |c| Ok(c.query_row("SELECT bytes FROM modules WHERE hash = ?1", [hash], |r| r.get(0)).optional()?)).await
    }

    /// The bytes of a blob workers fetch by hash: an input blob or a module.
    pub async fn blob(&self, hash: Sha256Hash) -> StoreResult<Option<Vec<u8>>> {
        let hash = hash.to_hex();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT bytes FROM blobs WHERE hash = ?1 UNION ALL SELECT bytes FROM modules WHERE hash = ?1 LIMIT 1",
                [hash],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Size of the blob (input or module) stored under `hash`, if any.
    pub async fn blob_size(&self, hash: Sha256Hash) -> StoreResult<Option<u64>> {
        let hash = hash.to_hex();
        self.read(move |c| Ok(blob_size(c, &hash)?)).await
    }

    /// Sizes of the input blobs among `hashes` (absent ones are left out).
    pub async fn input_blob_sizes(&self, hashes: Vec<Sha256Hash>) -> StoreResult<std::collections::HashMap<Sha256Hash, u64>> {
        self.read(move |c| {
            let mut q = c.prepare_cached("SELECT size FROM blobs WHERE hash = ?1")?;
            let mut sizes = std::collections::HashMap::new();
            for h in hashes {
                if let Some(size) = q.query_row([h.to_hex()], |r| r.get::<_, i64>(0)).optional()? {
                    sizes.insert(h, size as u64);
                }
            }
            Ok(sizes)
        })
        .await
    }

    /// Every deployed function, by name.
    pub fn load_functions(&self) -> StoreResult<Vec<crate::domain::functions::Function>> {
        let c = self.reader.lock().expect("reader lock");
        let mut q = c.prepare("SELECT name, spec FROM functions ORDER BY name")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (name, spec) = row?;
            serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(format!("function {name}: {e}")))
        })
        .collect()
    }

    /// The sandboxed module run for `hash`, if `hash` is known.
    pub async fn runnable(&self, hash: Sha256Hash) -> StoreResult<Option<Sha256Hash>> {
        let hash = hash.to_hex();
        let runnable: Option<String> =
            self.read(move |c| Ok(c.query_row("SELECT runnable FROM modules WHERE hash = ?1", [hash], |r| r.get(0)).optional()?)).await?;
        runnable.map(|r| parse_hash(&r)).transpose()
    }

    /// Final records of a job's tasks with index > `after`, in index order.
    /// Up to `limit` records after task `after`, in task order, and no more
    /// than about `max_bytes` of outputs (always at least one record): a page
    /// of many large results is cut short rather than held whole.
    pub async fn results(&self, job: u64, after: Option<u32>, limit: u32, max_bytes: usize) -> StoreResult<Vec<ResultRecord>> {
        self.read(move |c| {
            let mut q = c.prepare_cached(
                "SELECT idx, status, exit_code, stdout, stderr, elapsed_ms, fuel_used, error, files FROM results
                 WHERE job = ?1 AND idx > ?2 ORDER BY idx LIMIT ?3",
            )?;
            let after = after.map(i64::from).unwrap_or(-1);
            let mut page = Vec::new();
            let mut bytes = 0;
            for row in q.query_map(params![job as i64, after, limit], row_to_result)? {
                let record = row?;
                bytes += record.size();
                page.push(record);
                if bytes >= max_bytes {
                    break;
                }
            }
            Ok(page)
        })
        .await
    }

    pub async fn result(&self, job: u64, task: u32) -> StoreResult<Option<ResultRecord>> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT idx, status, exit_code, stdout, stderr, elapsed_ms, fuel_used, error, files FROM results
                 WHERE job = ?1 AND idx = ?2",
                params![job as i64, task],
                row_to_result,
            )
            .optional()?)
        })
        .await
    }

    /// Every job not yet finished, with its tasks, for the scheduler at start-up.
    pub fn load_open_jobs(&self) -> StoreResult<Vec<StoredJob>> {
        let c = self.reader.lock().expect("reader lock");
        let mut jobs = Vec::new();
        let mut q = c.prepare("SELECT id, runnable, limits, state, validation FROM jobs ORDER BY id")?;
        let rows = q.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?))
        })?;
        for row in rows {
            let (id, runnable, limits, state, validation) = row?;
            let state = JobState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("job {id} state {state}")))?;
            if state != JobState::Running {
                continue;
            }
            let limits: JobLimits = serde_json::from_str(&limits).map_err(|e| StoreError::Corrupt(format!("job {id} limits: {e}")))?;
            let validation: Policy =
                serde_json::from_str(&validation).map_err(|e| StoreError::Corrupt(format!("job {id} validation: {e}")))?;
            let mut tq = c.prepare("SELECT stdin, args, env, files FROM tasks WHERE job = ?1 ORDER BY idx")?;
            let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
            let tasks = tq
                .query_map([id], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)))?
                .map(|row| {
                    let (stdin, args, env, files) = row?;
                    #[derive(serde::Deserialize)]
                    struct Files {
                        files: crate::domain::model::FileMap,
                        dirs: Vec<crate::domain::model::DirSpec>,
                        #[serde(default)]
                        stdin_blob: Option<crate::domain::model::BlobRef>,
                        #[serde(default)]
                        file_blobs: crate::domain::model::BlobFiles,
                    }
                    let files: Files = serde_json::from_str(&files).map_err(corrupt)?;
                    Ok(TaskInput {
                        stdin,
                        args: serde_json::from_str(&args).map_err(corrupt)?,
                        env: serde_json::from_str(&env).map_err(corrupt)?,
                        files: files.files,
                        dirs: files.dirs,
                        stdin_blob: files.stdin_blob,
                        file_blobs: files.file_blobs,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let mut finished = vec![false; tasks.len()];
            let mut fq = c.prepare("SELECT idx FROM results WHERE job = ?1")?;
            for idx in fq.query_map([id], |r| r.get::<_, i64>(0))? {
                if let Some(f) = finished.get_mut(idx? as usize) {
                    *f = true;
                }
            }
            let mut failures = vec![0u32; tasks.len()];
            // Only failures that count against the task.
            let free: Vec<String> = crate::domain::scheduler::FREE_FAILURES.iter().map(|k| format!("'{}'", k.as_str())).collect();
            let mut cq = c.prepare(&format!(
                "SELECT idx, COUNT(*) FROM failures WHERE job = ?1 AND kind NOT IN ({}) GROUP BY idx",
                free.join(", ")
            ))?;
            for row in cq.query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
                let (idx, n) = row?;
                if let Some(f) = failures.get_mut(idx as usize) {
                    *f = n as u32;
                }
            }
            jobs.push(StoredJob { id: id as u64, runnable: parse_hash(&runnable)?, limits, validation, state, tasks, finished, failures });
        }
        Ok(jobs)
    }

    /// Summary rows of every job (for listings and status of finished jobs).
    pub async fn job_rows(&self, only: Option<u64>) -> StoreResult<Vec<crate::domain::model::JobRow>> {
        self.read(move |c| {
            let mut q = c.prepare_cached(
                "SELECT j.id, j.module, j.task_count, j.state, j.created_at, j.limits,
                   (SELECT COUNT(*) FROM results r WHERE r.job = j.id AND r.status = 'done'),
                   (SELECT COUNT(*) FROM results r WHERE r.job = j.id AND r.status = 'failed'),
                   j.validation, j.checks
                 FROM jobs j WHERE (?1 IS NULL OR j.id = ?1) ORDER BY j.id",
            )?;
            let rows = q.query_map([only.map(|j| j as i64)], |r| {
                Ok(crate::domain::model::JobRow {
                    id: r.get::<_, i64>(0)? as u64,
                    module: r.get(1)?,
                    tasks: r.get(2)?,
                    state: r.get(3)?,
                    created_at: r.get(4)?,
                    limits: r.get(5)?,
                    done: r.get(6)?,
                    failed: r.get(7)?,
                    validation: r.get(8)?,
                    checks: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Every recorded failure of one task, oldest first.
    pub async fn failures(&self, job: u64, task: u32) -> StoreResult<Vec<(String, String)>> {
        self.read(move |c| {
            let mut q = c.prepare_cached("SELECT kind, message FROM failures WHERE job = ?1 AND idx = ?2 ORDER BY rowid")?;
            let rows = q.query_map(params![job as i64, task], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// A hash column: hex text.
fn parse_hash(text: &str) -> StoreResult<Sha256Hash> {
    text.parse().map_err(|e| StoreError::Corrupt(format!("hash {text:?}: {e}")))
}

fn row_to_result(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRecord> {
    let status: String = r.get(1)?;
    Ok(ResultRecord {
        task: r.get(0)?,
        status: crate::domain::model::TaskStatus::parse(&status).unwrap_or(crate::domain::model::TaskStatus::Failed),
        exit_code: r.get(2)?,
        stdout: r.get(3)?,
        stderr: r.get(4)?,
        elapsed_ms: r.get(5)?,
        fuel_used: r.get::<_, i64>(6)? as u64,
        error: r.get(7)?,
        files: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
    })
}
