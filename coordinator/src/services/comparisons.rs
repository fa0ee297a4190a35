//! Votes of reports for jobs with a comparator module: each new output is
//! compared with one earlier output of each class, oldest first, and votes
//! with the first it agrees with. Comparisons run on blocking threads, a few
//! at a time, outside the scheduler lock; the scheduler asks for a second
//! round if another report of the task was counted meanwhile.

use super::Services;
use crate::domain::model::ResultRecord;
use crate::domain::scheduler::{Finishing, Vote};
use crate::sandbox::comparator::{Comparator, CompareError};
use crate::store::Store;
use idlecore_protocol::Sha256Hash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Compiled comparators kept at most (by module hash).
const CACHED: usize = 16;

/// The coordinator's comparators: compiled once, run a few at a time.
pub struct Comparators {
    compiled: Mutex<HashMap<Sha256Hash, Arc<Comparator>>>,
    running: Semaphore,
}

impl Default for Comparators {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Comparators { compiled: Mutex::default(), running: Semaphore::new(cores) }
    }
}

impl Comparators {
    /// The comparator uploaded under `hash`, compiled and checked. The error
    /// says why it cannot be used.
    pub async fn get(&self, store: &Store, hash: Sha256Hash) -> Result<Arc<Comparator>, String> {
        if let Some(c) = self.compiled.lock().expect("comparators").get(&hash) {
            return Ok(c.clone());
        }
        let bytes = store.module(hash).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("no module {hash} (upload it first)"))?;
        let compiled = tokio::task::spawn_blocking(move || Comparator::new(&bytes)).await.map_err(|e| e.to_string())??;
        let compiled = Arc::new(compiled);
        let mut cache = self.compiled.lock().expect("comparators");
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(hash, compiled.clone());
        Ok(compiled)
    }

    async fn agree(&self, c: Arc<Comparator>, earlier: Arc<ResultRecord>, new: Arc<ResultRecord>) -> Result<bool, CompareError> {
        let _slot = self.running.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(move || c.agree(&earlier, &new))
            .await
            .unwrap_or_else(|e| Err(CompareError::Trap(format!("comparison aborted: {e}"))))
    }
}

/// The vote of a claimed report's output. Identical outputs agree without
/// a comparison; a comparison that fails counts as "differ" (and in the
/// job's figures), and makes the vote unsure: a spot check it fails is dropped.
pub async fn vote(services: &Services, f: &Finishing, record: &ResultRecord) -> Vote {
    let digest = crate::domain::policy::digest(record);
    let Some(cmp) = services.schedule(|s, _| s.compare_with(f.lease)) else { return Vote::exact(digest) };
    if cmp.outputs.is_empty() || cmp.outputs.iter().any(|(d, _)| *d == digest) {
        return Vote::compared(digest, &cmp, false);
    }
    let comparator = match services.comparators.get(&services.store, cmp.comparator).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(job = f.job, comparator = %cmp.comparator, "comparator unusable: {e}");
            services.schedule(|s, _| s.comparator_failed(f.job));
            return Vote::compared(digest, &cmp, true);
        }
    };
    let new = Arc::new(record.clone());
    let mut unsure = false;
    for (class, earlier) in &cmp.outputs {
        match services.comparators.agree(comparator.clone(), earlier.clone(), new.clone()).await {
            Ok(true) => return Vote::compared(*class, &cmp, unsure),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(job = f.job, task = f.task, "comparison failed, counted as differing: {e}");
                services.schedule(|s, _| s.comparator_failed(f.job));
                unsure = true;
            }
        }
    }
    Vote::compared(digest, &cmp, unsure)
}
