//! Task inputs stored as blobs: large inline inputs moved out of the job at
//! creation, and every blob a job names checked against the store. A task
//! then carries only hashes; workers fetch the bytes once each, from peers
//! or `GET /blobs/{hash}`, however many tasks share them.

use crate::error::ApiError;
use crate::model::{BlobFiles, BlobRef, FileMap, TaskInput};
use idlecore_protocol::limits::{MAX_LEASE_BLOBS, MAX_LEASE_BLOB_BYTES};
use idlecore_protocol::BlobHash;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// New blobs taken out of a job's inputs, by hash (each stored once).
pub type Extracted = HashMap<BlobHash, Vec<u8>>;

/// Moves every inline stdin and file larger than `threshold` bytes into a
/// blob reference. Inputs already given as blobs stay as they are.
pub fn extract(tasks: &mut [TaskInput], threshold: usize) -> Extracted {
    let mut found = Extracted::new();
    let mut take = |bytes: Vec<u8>| {
        let hash: BlobHash = Sha256::digest(&bytes).into();
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

fn move_files(
    files: &mut FileMap,
    blobs: &mut BlobFiles,
    threshold: usize,
    take: &mut impl FnMut(Vec<u8>) -> BlobRef,
) {
    let large: Vec<String> = files
        .0
        .iter()
        .filter(|(p, d)| d.len() > threshold && !blobs.0.contains_key(*p))
        .map(|(p, _)| p.clone())
        .collect();
    for path in large {
        let bytes = files.0.remove(&path).expect("listed above");
        blobs.0.insert(path, take(bytes));
    }
}

/// Sets every reference's size from the store (or from `extracted`), and
/// checks each task's blobs against the protocol's limits. A blob that was
/// never uploaded is refused by hash.
pub async fn resolve(
    store: &crate::store::Store,
    tasks: &mut [TaskInput],
    extracted: &Extracted,
) -> Result<(), ApiError> {
    let mut named: Vec<BlobHash> = tasks
        .iter_mut()
        .flat_map(|t| t.blob_refs_mut().map(|b| b.hash))
        .filter(|h| !extracted.contains_key(h))
        .collect();
    named.sort_unstable();
    named.dedup();
    let mut sizes = store.input_blob_sizes(named).await?;
    sizes.extend(extracted.iter().map(|(h, b)| (*h, b.len() as u64)));
    for (i, t) in tasks.iter_mut().enumerate() {
        let mut total = 0u64;
        let mut count = 0;
        for b in t.blob_refs_mut() {
            b.size = *sizes.get(&b.hash).ok_or_else(|| {
                ApiError::NotFound(format!(
                    "task {i}: blob {} (upload it first)",
                    hex::encode(b.hash)
                ))
            })?;
            total += b.size;
            count += 1;
        }
        if count > MAX_LEASE_BLOBS || total > MAX_LEASE_BLOB_BYTES {
            return Err(ApiError::BadRequest(format!(
                "task {i}: at most {MAX_LEASE_BLOBS} blobs of {MAX_LEASE_BLOB_BYTES} bytes together; it names {count} of {total}"
            )));
        }
    }
    Ok(())
}

/// The input blobs of a task, as the lease names them (`dirs` are the
/// lease's directories, in the order `TaskInput::blob_refs` numbers them).
pub fn lease_blobs(input: &TaskInput) -> Vec<idlecore_protocol::InputBlob> {
    use idlecore_protocol::{BlobTarget, InputBlob};
    input
        .blob_refs()
        .map(|(at, b)| InputBlob {
            hash: b.hash,
            size: b.size,
            target: match at {
                None => BlobTarget::Stdin,
                Some((dir, path)) => BlobTarget::File {
                    dir: dir as u32,
                    path: path.to_string(),
                },
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DirSpec;

    #[test]
    fn large_inputs_become_one_blob_each_and_small_ones_stay() {
        let shared = vec![7u8; 100];
        let mut tasks = vec![
            TaskInput {
                stdin: shared.clone(),
                ..TaskInput::default()
            },
            TaskInput {
                stdin: b"small".to_vec(),
                files: FileMap(
                    [
                        ("big.bin".to_string(), shared.clone()),
                        ("s.txt".to_string(), b"s".to_vec()),
                    ]
                    .into(),
                ),
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
        let hash: BlobHash = Sha256::digest(&shared).into();
        assert_eq!(found[&hash], shared);
        assert_eq!(tasks[0].stdin_blob, Some(BlobRef { hash, size: 100 }));
        assert!(tasks[0].stdin.is_empty());
        assert_eq!(tasks[1].stdin, b"small");
        assert_eq!(
            tasks[1].file_blobs.0["big.bin"],
            BlobRef { hash, size: 100 }
        );
        assert_eq!(tasks[1].files.0.keys().collect::<Vec<_>>(), ["s.txt"]);
        assert!(tasks[2].dirs[0].files.is_empty());
        assert_eq!(tasks[2].dirs[0].file_blobs.0["d.bin"].size, 64);
    }

    #[test]
    fn the_lease_names_each_blob_where_it_goes() {
        let r = |n: u8| BlobRef {
            hash: [n; 32],
            size: n as u64,
        };
        let default_layout = TaskInput {
            stdin_blob: Some(r(1)),
            file_blobs: BlobFiles([("a/x".to_string(), r(2))].into()),
            ..TaskInput::default()
        };
        let got = lease_blobs(&default_layout);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].target, idlecore_protocol::BlobTarget::Stdin);
        // `/input` is the lease's first directory.
        assert_eq!(
            got[1].target,
            idlecore_protocol::BlobTarget::File {
                dir: 0,
                path: "a/x".into()
            }
        );
        let dir = |guest: &str, blobs: BlobFiles| DirSpec {
            guest: guest.into(),
            writable: false,
            files: FileMap::default(),
            file_blobs: blobs,
        };
        let own_dirs = TaskInput {
            dirs: vec![
                dir("/a", BlobFiles::default()),
                dir("/b", BlobFiles([("y".to_string(), r(3))].into())),
            ],
            ..TaskInput::default()
        };
        let got = lease_blobs(&own_dirs);
        assert_eq!(
            got[0].target,
            idlecore_protocol::BlobTarget::File {
                dir: 1,
                path: "y".into()
            }
        );
        assert_eq!((got[0].hash, got[0].size), ([3; 32], 3));
    }
}
