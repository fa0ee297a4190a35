//! What was acknowledged survives SIGKILL; SIGTERM shuts down cleanly.

mod common;

use idlecore_e2e::proto_worker::Received;
use idlecore_e2e::ProtoWorker;
use idlecore_protocol::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// Reports a result and waits for its ack; leases that arrive meanwhile go to `pending`.
fn complete(w: &mut ProtoWorker, lease: &Lease, pending: &mut Vec<Lease>) {
    let out = format!("out-{}", lease.task).into_bytes();
    let result = TaskResult { lease: lease.lease, exit_code: 0, stdout: out, stderr: vec![], elapsed_ms: 1, fuel_used: 0, files: vec![] };
    pending.extend(w.report(&WorkerMessage::Result(result)).unwrap());
}

#[test]
fn acknowledged_results_and_jobs_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(1)).unwrap();
    let stdins: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    let job = api.create_job(&hash, &stdins, &[], json!({})).unwrap();
    let second_job = api.create_job(&hash, &[b"later".to_vec()], &[], json!({})).unwrap();

    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let mut done = BTreeSet::new();
    let mut pending = vec![];
    let next = |w: &mut ProtoWorker, pending: &mut Vec<Lease>| {
        if pending.is_empty() {
            w.next_lease().unwrap()
        } else {
            pending.remove(0)
        }
    };
    for _ in 0..4 {
        let l = next(&mut w, &mut pending);
        complete(&mut w, &l, &mut pending);
        done.insert(l.task);
    }
    // One more is leased but never finished when the coordinator dies.
    let _in_flight = next(&mut w, &mut pending);
    c.kill();
    drop(w);

    let c = common::start(dir.path());
    let api = c.api();
    let kept: BTreeSet<u32> = api.results(job).unwrap().iter().map(|r| r.0).collect();
    assert_eq!(kept, done, "every acknowledged result is still there");
    assert_eq!(api.status(job).unwrap()["state"], "running");
    assert_eq!(api.status(second_job).unwrap()["tasks"], 1, "the accepted job is still there");

    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let mut rerun = BTreeSet::new();
    let mut pending = vec![];
    for _ in 0..7 {
        let l = next(&mut w, &mut pending);
        if l.job == job {
            assert!(!done.contains(&l.task), "task {} was finished before the crash", l.task);
            rerun.insert(l.task);
        }
        complete(&mut w, &l, &mut pending);
    }
    assert_eq!(rerun.len(), 6);
    idlecore_e2e::wait_for("both jobs to complete", Duration::from_secs(10), || {
        let a = api.status(job).unwrap()["state"] == "completed";
        let b = api.status(second_job).unwrap()["state"] == "completed";
        (a && b).then_some(())
    })
    .unwrap();
    let results = api.results(job).unwrap();
    assert_eq!(results.len(), 10);
    for (task, status, stdout, _) in results {
        assert_eq!(status, "done");
        assert_eq!(stdout, format!("out-{task}").into_bytes());
    }
}

#[test]
fn sigterm_closes_sessions_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::start(dir.path());
    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let status = c.terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "exit status {status}");
    match w.recv().unwrap() {
        Received::Msg(CoordinatorMessage::Error(e)) => assert_eq!(e.code, ErrorCode::ShuttingDown),
        other => panic!("expected a ShuttingDown error, got {other:?}"),
    }
}

/// Reports a failure and waits for its ack; returns a lease that came meanwhile.
fn fail(w: &mut ProtoWorker, lease: LeaseId, kind: FailureKind) -> Option<Lease> {
    w.report(&WorkerMessage::Failure(TaskFailure { lease, kind, message: kind.as_str().into() })).unwrap().pop()
}

#[test]
fn free_failures_still_do_not_count_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(20)).unwrap();
    let job = api.create_job(&hash, &[vec![]], &[], json!({ "max_attempts": 2 })).unwrap();
    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let mut l = w.next_lease().unwrap();
    for _ in 0..2 {
        l = fail(&mut w, l.lease, FailureKind::ExecutorCrashed).unwrap_or_else(|| w.next_lease().unwrap());
    }
    drop(w);
    c.kill();
    let c = common::start_with(dir.path(), Some(common::TOKEN), Some(c.addr), 1000);
    let api = c.api();
    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let l = w.next_lease().unwrap();
    let next = fail(&mut w, l.lease, FailureKind::Trap);
    assert_eq!(api.status(job).unwrap()["state"], "running", "one counted failure of two allowed");
    let l = next.unwrap_or_else(|| w.next_lease().unwrap());
    fail(&mut w, l.lease, FailureKind::Trap);
    idlecore_e2e::wait_for("the task to fail", Duration::from_secs(10), || {
        (api.status(job).unwrap()["state"] == "completed").then_some(())
    })
    .unwrap();
    assert_eq!(api.status(job).unwrap()["failed"], 1);
}

#[test]
fn a_job_whose_last_result_was_stored_before_a_crash_completes_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(21)).unwrap();
    let job = api.create_job(&hash, &[vec![1], vec![2]], &[], json!({})).unwrap();
    let (mut w, _) = ProtoWorker::join(c.addr, 2).unwrap();
    let (a, b) = (w.next_lease().unwrap(), w.next_lease().unwrap());
    let mut pending = vec![];
    complete(&mut w, &a, &mut pending);
    complete(&mut w, &b, &mut pending);
    idlecore_e2e::wait_for("the job", Duration::from_secs(10), || (api.status(job).unwrap()["state"] == "completed").then_some(()))
        .unwrap();
    drop(w);
    c.kill();
    // As if the coordinator had died between storing the last result and marking the job.
    let db = rusqlite::Connection::open(dir.path().join("idlecore.sqlite3")).unwrap();
    db.execute("UPDATE jobs SET state = 'running' WHERE id = ?1", [job as i64]).unwrap();
    drop(db);
    let c = common::start_with(dir.path(), Some(common::TOKEN), Some(c.addr), 1000);
    let api = c.api();
    assert_eq!(api.status(job).unwrap()["state"], "completed");
    assert_eq!(api.stats().unwrap()["running_jobs"], 0, "nothing of it is held in memory");
}
