//! Blobs the worker fetches by hash: task modules and task inputs, over
//! HTTP from the coordinator, each checked against its SHA-256 and its
//! size limit while it arrives. Modules are kept on disk (a returning worker
//! downloads nothing) and compiled in memory (the agent core's LRU holds the
//! compiled ones); inputs are kept in memory only.

use crate::executors::{Input, Module};
use futures_util::StreamExt;
use idlecore_agent_core::{Blob, Kind, Loaded, Source};
use idlecore_native_engine::engine;
use idlecore_protocol::{FailureKind, Sha256Hash};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

pub type BlobError = (FailureKind, String);

/// Modules on disk, one file per hash, the least recently used removed past
/// the budget.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    budget: u64,
}

impl DiskCache {
    /// The cache in `dir` (made, owner-only, if missing).
    pub fn open(dir: PathBuf, budget: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(DiskCache { dir, budget })
    }

    fn path(&self, hash: Sha256Hash) -> PathBuf {
        self.dir.join(format!("{hash}.wasm"))
    }

    /// The bytes kept for `hash`, if they are there and still have that hash
    /// (damaged ones are removed).
    pub fn get(&self, hash: Sha256Hash) -> Option<Vec<u8>> {
        let path = self.path(hash);
        let bytes = std::fs::read(&path).ok()?;
        if Sha256Hash::of(&bytes) != hash {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // Marks it used: eviction goes by modification time.
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    /// Keeps `bytes` under `hash`, then removes the least recently used
    /// others past the budget. Failures (a full disk) only cost a download.
    pub fn put(&self, hash: Sha256Hash, bytes: &[u8]) {
        let tmp = self.dir.join(format!(".{hash}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, self.path(hash))).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.evict(hash);
    }

    fn evict(&self, keep: Sha256Hash) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".wasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        let kept = self.path(keep);
        for (_, size, path) in files {
            if total <= self.budget {
                break;
            }
            if path != kept && std::fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }
}

/// Fetches and checks blobs.
#[derive(Clone)]
pub struct Loader {
    http: reqwest::Client,
    cache: Option<DiskCache>,
}

impl Loader {
    pub fn new(http: reqwest::Client, cache: Option<DiskCache>) -> Loader {
        Loader { http, cache }
    }

    /// The blob `hash` from the disk cache or `url`, at most `limit` bytes,
    /// checked, and compiled if it is a module.
    pub async fn load(&self, url: String, hash: Sha256Hash, kind: Kind, limit: u64) -> Result<Loaded<Module, Input>, BlobError> {
        let fail = |why: String| (kind.fetch_failure(), why);
        let cached = match (kind, &self.cache) {
            (Kind::Module, Some(cache)) => {
                let cache = cache.clone();
                tokio::task::spawn_blocking(move || cache.get(hash)).await.ok().flatten()
            }
            _ => None,
        };
        let (bytes, source) = match cached {
            Some(bytes) => (bytes, Source::Cache),
            None => (self.download(&url, hash, limit).await.map_err(fail)?, Source::Network),
        };
        let size = bytes.len();
        let blob = match kind {
            Kind::Input => Blob::Input(Arc::new(bytes)),
            Kind::Module => {
                let cache = if source == Source::Network { self.cache.clone() } else { None };
                let compiled = tokio::task::spawn_blocking(move || {
                    let compiled = engine::runtime().compile(hash, &bytes);
                    if let (Ok(_), Some(cache)) = (&compiled, cache) {
                        cache.put(hash, &bytes);
                    }
                    compiled
                })
                .await
                .map_err(|e| (FailureKind::Internal, format!("compiling module: {e}")))?;
                Blob::Module(Arc::new(compiled.map_err(|e| (FailureKind::ModuleInvalid, e))?))
            }
        };
        Ok((blob, size, source))
    }

    /// Downloads `url`, refusing more than `limit` bytes (from the header, or
    /// as they arrive) and bytes of another hash.
    async fn download(&self, url: &str, hash: Sha256Hash, limit: u64) -> Result<Vec<u8>, String> {
        let response = self.http.get(url).send().await.map_err(|e| format!("fetching {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("fetching {url}: {}", response.status()));
        }
        if let Some(n) = response.content_length().filter(|n| *n > limit) {
            return Err(format!("{url} is {n} bytes, more than the {limit} expected"));
        }
        let mut bytes = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("fetching {url}: {e}"))?;
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(format!("{url} sent more than the {limit} bytes expected"));
            }
            bytes.extend_from_slice(&chunk);
        }
        if Sha256Hash::of(&bytes) != hash {
            return Err(format!("{url} sent bytes that do not have its hash"));
        }
        Ok(bytes)
    }
}
