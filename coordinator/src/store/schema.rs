//! The store's tables, and the columns added to them since their first release.

use super::StoreResult;
use rusqlite::Connection;
use std::path::Path;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS modules(
  hash TEXT PRIMARY KEY, bytes BLOB NOT NULL, size INTEGER NOT NULL, runnable TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs(hash TEXT PRIMARY KEY, bytes BLOB NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs(
  id INTEGER PRIMARY KEY AUTOINCREMENT, module TEXT NOT NULL, runnable TEXT NOT NULL, limits TEXT NOT NULL,
  task_count INTEGER NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks(
  job INTEGER NOT NULL, idx INTEGER NOT NULL, stdin BLOB NOT NULL, args TEXT NOT NULL,
  env TEXT NOT NULL, files TEXT NOT NULL, PRIMARY KEY(job, idx));
CREATE TABLE IF NOT EXISTS results(
  job INTEGER NOT NULL, idx INTEGER NOT NULL, status TEXT NOT NULL, exit_code INTEGER,
  stdout BLOB NOT NULL, stderr BLOB NOT NULL, elapsed_ms INTEGER NOT NULL, fuel_used INTEGER NOT NULL,
  files TEXT NOT NULL, error TEXT, PRIMARY KEY(job, idx));
CREATE TABLE IF NOT EXISTS failures(
  job INTEGER NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS failures_by_task ON failures(job, idx);
CREATE TABLE IF NOT EXISTS functions(name TEXT PRIMARY KEY, spec TEXT NOT NULL);
";

/// Columns added to `jobs` after its first release, with their default for
/// older rows: those jobs took every result as it came.
const JOB_COLUMNS: [(&str, &str); 2] =
    [("validation", "TEXT NOT NULL DEFAULT '{\"replicas\":1,\"max_replicas\":1,\"spot_checks\":0.0}'"), ("checks", "TEXT")];

pub(super) fn migrate(conn: &Connection) -> StoreResult<()> {
    let mut q = conn.prepare("SELECT name FROM pragma_table_info('jobs')")?;
    let have: Vec<String> = q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for (name, decl) in JOB_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE jobs ADD COLUMN {name} {decl}"))?;
        }
    }
    Ok(())
}

pub(super) fn open(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}
