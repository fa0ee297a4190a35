//! Jobs, tasks and results as the API, the store and the scheduler see them.

use super::policy::Policy;
use super::scheduler::ValidationStats;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use idlecore_protocol::{Sha256Hash, TaskLimits};
use serde::{Deserialize, Serialize};

/// One task's input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    #[serde(default, with = "b64")]
    pub stdin: Vec<u8>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Read-only files under `/input` (`a/b.txt` → `/input/a/b.txt`).
    #[serde(default, skip_serializing_if = "FileMap::is_empty")]
    pub files: FileMap,
    /// The task's preopened directories, instead of `/input` and `/output`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<DirSpec>,
    /// Stdin as an uploaded blob (instead of `stdin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_blob: Option<BlobRef>,
    /// Files under `/input` whose contents are uploaded blobs.
    #[serde(default, skip_serializing_if = "BlobFiles::is_empty")]
    pub file_blobs: BlobFiles,
}

impl TaskInput {
    /// Bytes this input holds in memory, roughly: what admission control counts.
    pub fn size(&self) -> usize {
        let files = |m: &FileMap| m.0.iter().map(|(p, d)| p.len() + d.len()).sum::<usize>();
        self.stdin.len()
            + self.args.iter().map(String::len).sum::<usize>()
            + self.env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + files(&self.files)
            + self.dirs.iter().map(|d| d.guest.len() + files(&d.files) + d.file_blobs.size()).sum::<usize>()
            + self.file_blobs.size()
            + self.stdin_blob.as_ref().map_or(0, |_| BLOB_REF_BYTES)
    }

    /// Every blob the task names, with where it goes: `None` for stdin, else
    /// (directory index among the lease's dirs, path).
    pub fn blob_refs(&self) -> impl Iterator<Item = (Option<(usize, &str)>, &BlobRef)> {
        fn files(i: usize, m: &BlobFiles) -> impl Iterator<Item = (Option<(usize, &str)>, &BlobRef)> {
            m.0.iter().map(move |(p, b)| (Some((i, p.as_str())), b))
        }
        let stdin = self.stdin_blob.iter().map(|b| (None, b));
        // Without `dirs`, `/input` is the lease's first directory.
        let own: Box<dyn Iterator<Item = _>> = if self.dirs.is_empty() {
            Box::new(files(0, &self.file_blobs))
        } else {
            Box::new(self.dirs.iter().enumerate().flat_map(|(i, d)| files(i, &d.file_blobs)))
        };
        stdin.chain(own)
    }

    /// The input blobs of the task, as the lease names them (`dirs` are the
    /// lease's directories, in the order [`TaskInput::blob_refs`] numbers them).
    pub fn lease_blobs(&self) -> Vec<idlecore_protocol::InputBlob> {
        use idlecore_protocol::{BlobTarget, InputBlob};
        self.blob_refs()
            .map(|(at, b)| InputBlob {
                hash: b.hash,
                size: b.size,
                target: match at {
                    None => BlobTarget::Stdin,
                    Some((dir, path)) => BlobTarget::File { dir: dir as u32, path: path.to_string() },
                },
            })
            .collect()
    }

    /// Every blob reference, to fill in or check.
    pub fn blob_refs_mut(&mut self) -> impl Iterator<Item = &mut BlobRef> {
        let dirs = self.dirs.iter_mut().flat_map(|d| d.file_blobs.0.values_mut());
        self.stdin_blob.iter_mut().chain(self.file_blobs.0.values_mut()).chain(dirs)
    }
}

/// What one blob reference costs in memory, roughly (for admission control).
const BLOB_REF_BYTES: usize = 48;

/// An uploaded blob a task input names: its SHA-256 and size. In a job
/// request it is the hex hash alone; the coordinator fills in the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    pub hash: Sha256Hash,
    pub size: u64,
}

impl Serialize for BlobRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("BlobRef", 2)?;
        m.serialize_field("hash", &self.hash)?;
        m.serialize_field("size", &self.size)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for BlobRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BlobRef, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Hash(String),
            Full { hash: String, size: u64 },
        }
        let (hash, size) = match Raw::deserialize(d)? {
            Raw::Hash(h) => (h, 0),
            Raw::Full { hash, size } => (hash, size),
        };
        let hash = hash.parse().map_err(|_| serde::de::Error::custom(format!("blob {hash:?} is not a hex SHA-256")))?;
        Ok(BlobRef { hash, size })
    }
}

/// Files whose contents are blobs, by relative path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobFiles(pub std::collections::BTreeMap<String, BlobRef>);

impl BlobFiles {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn size(&self) -> usize {
        self.0.keys().map(|p| p.len() + BLOB_REF_BYTES).sum()
    }
}

/// A preopened directory of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSpec {
    /// Absolute guest path, e.g. `/data`.
    pub guest: String,
    #[serde(default)]
    pub writable: bool,
    #[serde(default)]
    pub files: FileMap,
    /// Files whose contents are uploaded blobs.
    #[serde(default, skip_serializing_if = "BlobFiles::is_empty")]
    pub file_blobs: BlobFiles,
}

/// Files by relative path, with base64 contents in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMap(pub std::collections::BTreeMap<String, Vec<u8>>);

impl FileMap {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for FileMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, &B64.encode(v))?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for FileMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FileMap, D::Error> {
        let raw = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                let bytes = B64.decode(v.as_bytes()).map_err(|e| serde::de::Error::custom(format!("file {k:?}: invalid base64: {e}")))?;
                Ok((k, bytes))
            })
            .collect::<Result<_, _>>()
            .map(FileMap)
    }
}

/// Limits a job owner sets for every task of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobLimits {
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u32,
    #[serde(default = "defaults::max_output_bytes")]
    pub max_output_bytes: u32,
    #[serde(default = "defaults::max_memory_mib")]
    pub max_memory_mib: u32,
    /// Runs that fail because of the task (trap, exit by limit) before the task is failed.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Instructions one run may execute; 0 means no limit.
    #[serde(default)]
    pub fuel: u64,
    /// Clocks and random numbers from the task's seed (true, the default), so
    /// honest runs agree byte for byte; false gives tasks real time and entropy.
    #[serde(default = "defaults::deterministic")]
    pub deterministic: bool,
}

mod defaults {
    pub fn timeout_ms() -> u32 {
        60_000
    }
    pub fn max_output_bytes() -> u32 {
        4 * 1024 * 1024
    }
    pub fn max_memory_mib() -> u32 {
        256
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn deterministic() -> bool {
        true
    }
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            timeout_ms: defaults::timeout_ms(),
            max_output_bytes: defaults::max_output_bytes(),
            max_memory_mib: defaults::max_memory_mib(),
            max_attempts: defaults::max_attempts(),
            fuel: 0,
            deterministic: true,
        }
    }
}

impl JobLimits {
    /// Checks a job owner's limits; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let max_out = (idlecore_protocol::MAX_FRAME_BYTES - 64 * 1024) as u32;
        if self.timeout_ms == 0 || self.timeout_ms > 24 * 3600 * 1000 {
            return Err("limits.timeout_ms must be between 1 and 86400000".into());
        }
        if self.max_output_bytes > max_out {
            return Err(format!("limits.max_output_bytes must be at most {max_out}"));
        }
        if self.max_memory_mib == 0 || self.max_memory_mib > 4096 {
            return Err("limits.max_memory_mib must be between 1 and 4096".into());
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err("limits.max_attempts must be between 1 and 100".into());
        }
        Ok(())
    }

    pub fn task_limits(&self) -> TaskLimits {
        TaskLimits {
            timeout_ms: self.timeout_ms,
            max_output_bytes: self.max_output_bytes,
            max_memory_pages: self.max_memory_mib.saturating_mul(16),
            fuel: self.fuel,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Completed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "running" => JobState::Running,
            "completed" => JobState::Completed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Done,
    Failed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<TaskStatus> {
        match s {
            "done" => Some(TaskStatus::Done),
            "failed" => Some(TaskStatus::Failed),
            _ => None,
        }
    }
}

/// A task's final record: its accepted result, or its failure after the last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub task: u32,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    #[serde(with = "b64")]
    pub stdout: Vec<u8>,
    #[serde(with = "b64")]
    pub stderr: Vec<u8>,
    pub elapsed_ms: u32,
    /// Instructions the accepted run executed.
    #[serde(default)]
    pub fuel_used: u64,
    /// Files the run left in its writable directories, by guest path (`/output/a.txt`).
    #[serde(default, skip_serializing_if = "FileMap::is_empty")]
    pub files: FileMap,
    /// For failed tasks: every attempt's failure, `kind: message`, one per line.
    pub error: Option<String>,
}

impl ResultRecord {
    /// Bytes of output it holds, roughly.
    pub fn size(&self) -> usize {
        let files = self.files.0.iter().map(|(p, d)| p.len() + d.len()).sum::<usize>();
        64 + self.stdout.len() + self.stderr.len() + files + self.error.as_ref().map_or(0, String::len)
    }

    /// A task's failure record: no output, only why.
    pub fn failed(task: u32, error: String) -> ResultRecord {
        ResultRecord {
            task,
            status: TaskStatus::Failed,
            exit_code: None,
            stdout: vec![],
            stderr: vec![],
            elapsed_ms: 0,
            fuel_used: 0,
            files: FileMap::default(),
            error: Some(error),
        }
    }
}

/// A job as listed from the store.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: u64,
    pub module: String,
    pub tasks: u32,
    pub state: String,
    pub created_at: i64,
    pub limits: String,
    pub done: u32,
    pub failed: u32,
    /// The job's validation policy (JSON).
    pub validation: String,
    /// Final validation figures of an ended job (JSON).
    pub checks: Option<String>,
}

/// `POST /api/jobs` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// SHA-256 of an uploaded module (hex in JSON).
    pub module: Sha256Hash,
    pub tasks: Vec<TaskInput>,
    #[serde(default)]
    pub limits: JobLimits,
    /// How results are checked; the coordinator's default if absent.
    #[serde(default)]
    pub validation: Option<Policy>,
}

/// Job status as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: u64,
    pub module: Sha256Hash,
    pub state: String,
    pub tasks: u32,
    pub done: u32,
    pub failed: u32,
    /// Tasks leased to a worker right now (only known while the job runs).
    pub in_flight: u32,
    pub created_at: i64,
    pub limits: JobLimits,
    pub validation: Policy,
    /// What validation cost and found, for a job with validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<JobChecks>,
}

/// A job's validation figures as the API reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobChecks {
    #[serde(flatten)]
    pub stats: ValidationStats,
    /// Outputs received per task decided: the compute each accepted result
    /// cost, counting replicas, spot checks and verifying again (1.0: none
    /// spent on validation).
    pub overhead: f64,
}

/// Base64 (standard alphabet, padded) for byte fields in JSON.
pub mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes()).map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_names_each_blob_where_it_goes() {
        let r = |n: u8| BlobRef { hash: Sha256Hash([n; 32]), size: n as u64 };
        let default_layout =
            TaskInput { stdin_blob: Some(r(1)), file_blobs: BlobFiles([("a/x".to_string(), r(2))].into()), ..TaskInput::default() };
        let got = default_layout.lease_blobs();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].target, idlecore_protocol::BlobTarget::Stdin);
        // `/input` is the lease's first directory.
        assert_eq!(got[1].target, idlecore_protocol::BlobTarget::File { dir: 0, path: "a/x".into() });
        let dir =
            |guest: &str, blobs: BlobFiles| DirSpec { guest: guest.into(), writable: false, files: FileMap::default(), file_blobs: blobs };
        let own_dirs = TaskInput {
            dirs: vec![dir("/a", BlobFiles::default()), dir("/b", BlobFiles([("y".to_string(), r(3))].into()))],
            ..TaskInput::default()
        };
        let got = own_dirs.lease_blobs();
        assert_eq!(got[0].target, idlecore_protocol::BlobTarget::File { dir: 1, path: "y".into() });
        assert_eq!((got[0].hash, got[0].size), (Sha256Hash([3; 32]), 3));
    }
}
