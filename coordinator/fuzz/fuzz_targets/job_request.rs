//! Any bytes as the body of `POST /api/jobs`: parsing and every check the
//! coordinator makes before storing a job never panic, and a job that passes
//! them gives leases that a worker's decoder accepts (a job the coordinator
//! takes must never end the sessions of the workers it is sent to).

#![no_main]

use idlecore_coordinator::domain::model::JobRequest;
use idlecore_coordinator::domain::scheduler::{NewJob, Output, Restored, Scheduler};
use idlecore_coordinator::domain::tasks::{check_task, check_writable};
use idlecore_coordinator::services::blobs::extract;
use idlecore_protocol::{decode_coordinator, encode_coordinator, CoordinatorMessage};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<JobRequest>(data) else { return };
    if req.tasks.is_empty() || req.tasks.len() > 64 || req.limits.validate().is_err() {
        return;
    }
    let policy = req.validation.unwrap_or_default();
    if policy.validate().is_err() {
        return;
    }
    let mut tasks = req.tasks;
    // A small threshold, so that inputs become blobs as large ones do.
    let _ = extract(&mut tasks, 16);
    if tasks.iter().any(|t| check_task(t).is_err() || check_writable(t, req.limits.max_output_bytes).is_err()) {
        return;
    }
    let now = Instant::now();
    let mut s = Scheduler::new(1, Duration::from_secs(30), now);
    let n = tasks.len() as u32;
    s.add_job(NewJob { id: 1, module: req.module, limits: req.limits, policy, tasks, restored: Restored::default() }, now);
    s.register_worker(n.min(256), None, now);
    while let Some(out) = s.poll_output() {
        if let Output::Send(_, msg @ CoordinatorMessage::Lease(_)) = out {
            let frame = encode_coordinator(&msg);
            if frame.len() <= idlecore_protocol::MAX_FRAME_BYTES {
                decode_coordinator(&frame).expect("a lease of an accepted job decodes");
            }
        }
    }
});
