//! Giving memory back to the system once a job's tasks have left.

use std::time::Duration;

/// Hands the heap's free pages back to the system. The allocator keeps what
/// an ended job's tasks used, for reuse, so the resident set would otherwise
/// stay at the largest job's high-water mark while the coordinator idles.
/// Trimming walks the heap under its locks: at most once per `TRIM_EVERY`
/// (a trim asked for sooner waits its turn; one waits at a time), and never
/// on the async runtime's threads.
pub async fn return_free_memory() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    const TRIM_EVERY: Duration = Duration::from_secs(10);
    static LAST_TRIM: Mutex<Option<tokio::time::Instant>> = Mutex::new(None);
    static WAITING: AtomicBool = AtomicBool::new(false);
    if WAITING.swap(true, Ordering::AcqRel) {
        return; // the trim already waiting covers this job too
    }
    let due = LAST_TRIM.lock().unwrap_or_else(|e| e.into_inner()).map(|last| last + TRIM_EVERY);
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
    *LAST_TRIM.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
    WAITING.store(false, Ordering::Release);
    let _ = tokio::task::spawn_blocking(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory the allocator holds.
        unsafe {
            libc::malloc_trim(0);
        }
    })
    .await;
}
