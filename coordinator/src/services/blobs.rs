//! Content by hash: modules (checked and sandboxed at upload, both forms
//! stored), task inputs uploaded as blobs or moved out of a job at creation
//! (each stored once, however many tasks name it), what workers download
//! (the coordinator's egress), and what they fetched from peers instead.
//! A task carries only hashes; workers fetch the bytes once each, from
//! peers or `GET /blobs/{hash}`.

use super::{ServiceError, Services};
use crate::domain::model::{BlobFiles, BlobRef, FileMap, TaskInput};
use crate::store::Write;
use idlecore_protocol::limits::{MAX_LEASE_BLOBS, MAX_LEASE_BLOB_BYTES};
use idlecore_protocol::Sha256Hash;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// New blobs taken out of a job's inputs, by hash (each stored once).
pub type Extracted = HashMap<Sha256Hash, Vec<u8>>;

/// What workers downloaded from the coordinator: its egress.
#[derive(Debug, Default)]
pub struct Egress {
    /// `GET /modules/{hash}` answered.
    pub module_downloads: AtomicU64,
    /// `GET /blobs/{hash}` answered (inputs and modules).
    pub blob_downloads: AtomicU64,
    /// Bytes of every module and blob download.
    pub download_bytes: AtomicU64,
}

/// An uploaded module, as `POST /api/modules` answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Uploaded {
    /// SHA-256 of the bytes uploaded: what jobs name.
    pub hash: Sha256Hash,
    pub size: usize,
    /// SHA-256 of its sandboxed form: what leases name and workers run.
    pub runnable: Sha256Hash,
}

/// Checks and sandboxes a module, and stores both forms. Uploading the
/// same bytes again changes nothing.
pub async fn put_module(services: &Services, bytes: Vec<u8>) -> Result<Uploaded, ServiceError> {
    if bytes.is_empty() {
        return Err(ServiceError::BadRequest("empty body; send the module's bytes".into()));
    }
    // Instrumenting is CPU work proportional to the module: off the async threads.
    let (bytes, sandboxed) = tokio::task::spawn_blocking(move || {
        let sandboxed = crate::sandbox::instrument(&bytes);
        (bytes, sandboxed)
    })
    .await
    .map_err(|e| ServiceError::BadRequest(format!("module check failed: {e}")))?;
    let sandboxed = sandboxed.map_err(|e| ServiceError::BadRequest(e.to_string()))?;
    let (hash, runnable, size) = (Sha256Hash::of(&bytes), Sha256Hash::of(&sandboxed), bytes.len());
    services.store.write(Write::PutModule { hash: runnable, bytes: sandboxed, runnable }).await?;
    services.store.write(Write::PutModule { hash, bytes, runnable }).await?;
    tracing::info!(%hash, %runnable, size, "module stored");
    Ok(Uploaded { hash, size, runnable })
}

/// Stores a task input by its SHA-256, for tasks to name in `stdin_blob`
/// and `file_blobs`. Uploading the same bytes again changes nothing.
pub async fn put_blob(services: &Services, bytes: Vec<u8>) -> Result<BlobRef, ServiceError> {
    let (hash, size) = (Sha256Hash::of(&bytes), bytes.len() as u64);
    services.store.write(Write::PutBlob { hash, bytes }).await?;
    tracing::info!(%hash, size, "blob stored");
    Ok(BlobRef { hash, size })
}

/// A module's bytes by hash, counted as egress.
pub async fn module(services: &Services, hash: Sha256Hash) -> Result<Vec<u8>, ServiceError> {
    let bytes = services.store.module(hash).await?.ok_or_else(|| ServiceError::NotFound(format!("module {hash}")))?;
    services.egress.module_downloads.fetch_add(1, Ordering::Relaxed);
    services.egress.download_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(bytes)
}

/// Any blob workers fetch by hash (a task input or a module), counted as egress.
pub async fn blob(services: &Services, hash: Sha256Hash) -> Result<Vec<u8>, ServiceError> {
    let bytes = services.store.blob(hash).await?.ok_or_else(|| ServiceError::NotFound(format!("blob {hash}")))?;
    services.egress.blob_downloads.fetch_add(1, Ordering::Relaxed);
    services.egress.download_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(bytes)
}

/// Bytes of blobs a worker fetched from peers (after asking, at most a few
/// dozen): the coordinator's egress saved.
pub async fn count_peer_bytes(services: &Services, blobs: Vec<Sha256Hash>) {
    for blob in blobs {
        let size = services.store.blob_size(blob).await.ok().flatten();
        services.peers(|p, _| {
            p.stats.peer_fetches += 1;
            p.stats.peer_bytes += size.unwrap_or(0);
        });
    }
}

/// Moves every inline stdin and file larger than `threshold` bytes into a
/// blob reference. Inputs already given as blobs stay as they are.
pub fn extract(tasks: &mut [TaskInput], threshold: usize) -> Extracted {
    let mut found = Extracted::new();
    let mut take = |bytes: Vec<u8>| {
        let hash = Sha256Hash::of(&bytes);
        let size = bytes.len() as u64;
        found.entry(hash).or_insert(bytes);
        BlobRef { hash, size }
    };
    for t in tasks {
        if t.stdin.len() > threshold && t.stdin_blob.is_none() {
            t.stdin_blob = Some(take(std::mem::take(&mut t.stdin)));
        }
        // Top-level files with `dirs` are refused as given (see `check_task`).
        if t.dirs.is_empty() {
            move_files(&mut t.files, &mut t.file_blobs, threshold, &mut take);
        }
        for d in &mut t.dirs {
            move_files(&mut d.files, &mut d.file_blobs, threshold, &mut take);
        }
    }
    found
}

fn move_files(files: &mut FileMap, blobs: &mut BlobFiles, threshold: usize, take: &mut impl FnMut(Vec<u8>) -> BlobRef) {
    let large: Vec<String> =
        files.0.iter().filter(|(p, d)| d.len() > threshold && !blobs.0.contains_key(*p)).map(|(p, _)| p.clone()).collect();
    for path in large {
        let bytes = files.0.remove(&path).expect("listed above");
        blobs.0.insert(path, take(bytes));
    }
}

/// Sets every reference's size from the store (or from `extracted`), and
/// checks each task's blobs against the protocol's limits. A blob that was
/// never uploaded is refused by hash.
pub async fn resolve(store: &crate::store::Store, tasks: &mut [TaskInput], extracted: &Extracted) -> Result<(), ServiceError> {
    let mut named: Vec<Sha256Hash> =
        tasks.iter_mut().flat_map(|t| t.blob_refs_mut().map(|b| b.hash)).filter(|h| !extracted.contains_key(h)).collect();
    named.sort_unstable();
    named.dedup();
    let mut sizes = store.input_blob_sizes(named).await?;
    sizes.extend(extracted.iter().map(|(h, b)| (*h, b.len() as u64)));
    for (i, t) in tasks.iter_mut().enumerate() {
        let mut total = 0u64;
        let mut count = 0;
        for b in t.blob_refs_mut() {
            b.size = *sizes.get(&b.hash).ok_or_else(|| ServiceError::NotFound(format!("task {i}: blob {} (upload it first)", b.hash)))?;
            total += b.size;
            count += 1;
        }
        if count > MAX_LEASE_BLOBS || total > MAX_LEASE_BLOB_BYTES {
            return Err(ServiceError::BadRequest(format!(
                "task {i}: at most {MAX_LEASE_BLOBS} blobs of {MAX_LEASE_BLOB_BYTES} bytes together; it names {count} of {total}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::DirSpec;

    #[test]
    fn large_inputs_become_one_blob_each_and_small_ones_stay() {
        let shared = vec![7u8; 100];
        let mut tasks = vec![
            TaskInput { stdin: shared.clone(), ..TaskInput::default() },
            TaskInput {
                stdin: b"small".to_vec(),
                files: FileMap([("big.bin".to_string(), shared.clone()), ("s.txt".to_string(), b"s".to_vec())].into()),
                ..TaskInput::default()
            },
            TaskInput {
                dirs: vec![DirSpec {
                    guest: "/data".into(),
                    writable: false,
                    files: FileMap([("d.bin".to_string(), vec![1u8; 64])].into()),
                    file_blobs: BlobFiles::default(),
                }],
                ..TaskInput::default()
            },
        ];
        let found = extract(&mut tasks, 63);
        // The same bytes three times over: stored once.
        assert_eq!(found.len(), 2);
        let hash = Sha256Hash::of(&shared);
        assert_eq!(found[&hash], shared);
        assert_eq!(tasks[0].stdin_blob, Some(BlobRef { hash, size: 100 }));
        assert!(tasks[0].stdin.is_empty());
        assert_eq!(tasks[1].stdin, b"small");
        assert_eq!(tasks[1].file_blobs.0["big.bin"], BlobRef { hash, size: 100 });
        assert_eq!(tasks[1].files.0.keys().collect::<Vec<_>>(), ["s.txt"]);
        assert!(tasks[2].dirs[0].files.is_empty());
        assert_eq!(tasks[2].dirs[0].file_blobs.0["d.bin"].size, 64);
    }
}
