//! Worker sessions against the real coordinator over a real WebSocket.

mod common;

use common::result;
use idlecore_e2e::proto_worker::Received;
use idlecore_e2e::ProtoWorker;
use idlecore_protocol::*;
use serde_json::json;

fn wait_ack(w: &mut ProtoWorker, lease: LeaseId) -> Vec<Lease> {
    w.wait_ack(lease).unwrap()
}

#[test]
fn leases_respect_slots_and_results_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(1)).unwrap();
    let stdins: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
    let job = api.create_job(&hash, &stdins, &["x".into()], json!({})).unwrap();

    let (mut w, welcome) = ProtoWorker::join(c.addr, 2).unwrap();
    assert_eq!(welcome.version, PROTOCOL_VERSION);
    let a = w.next_lease().unwrap();
    let b = w.next_lease().unwrap();
    assert_eq!(a.job, job);
    assert_eq!(a.args, vec!["x".to_string()]);
    // Workers run the sandboxed form of the module, served under its own hash.
    assert_ne!(a.module.to_hex(), hash);
    let served = reqwest::blocking::get(format!("{}/modules/{}", c.base_url(), a.module.to_hex())).unwrap().bytes().unwrap();
    assert!(served.windows(13).any(|w| w == b"idlecore_fuel"), "the served module is instrumented");
    assert_eq!(api.stats().unwrap()["leases"], 2, "two slots, two leases");

    w.send(&result(a.lease, b"out-a")).unwrap();
    w.send(&result(a.lease, b"duplicate")).unwrap();
    let mut pending = wait_ack(&mut w, a.lease);
    // A lease id that was never issued is acknowledged and ignored.
    w.send(&result(12345, b"stale")).unwrap();
    pending.extend(wait_ack(&mut w, 12345));
    w.send(&result(b.lease, b"out-b")).unwrap();
    pending.extend(wait_ack(&mut w, b.lease));
    for _ in 0..3 {
        let l = if pending.is_empty() { w.next_lease().unwrap() } else { pending.remove(0) };
        assert_ne!(l.task, a.task, "a finished task is not leased again");
        w.send(&result(l.lease, format!("out-{}", l.task).as_bytes())).unwrap();
    }
    idlecore_e2e::wait_for("job completion", std::time::Duration::from_secs(10), || {
        (api.status(job).unwrap()["state"] == "completed").then_some(())
    })
    .unwrap();
    let results = api.results(job).unwrap();
    assert_eq!(results.len(), 5);
    let first = results.iter().find(|r| r.0 == a.task).unwrap();
    assert_eq!(first.2, b"out-a", "the duplicate did not replace the first result");
    assert!(results.iter().all(|r| r.1 == "done"));
}

#[test]
fn a_disconnected_workers_lease_goes_to_another_worker() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(2)).unwrap();
    api.create_job(&hash, &[b"only".to_vec()], &[], json!({})).unwrap();
    let (mut w1, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let first = w1.next_lease().unwrap();
    drop(w1);
    let (mut w2, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let second = w2.next_lease().unwrap();
    assert_eq!((first.job, first.task), (second.job, second.task));
    assert_ne!(first.lease, second.lease, "a new attempt id");
}

#[test]
fn a_result_reported_after_reconnecting_counts_and_cancels_the_newer_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(4)).unwrap();
    let job = api.create_job(&hash, &[b"only".to_vec()], &[], json!({})).unwrap();
    let (mut w1, welcome) = ProtoWorker::join(c.addr, 1).unwrap();
    let first = w1.next_lease().unwrap();
    drop(w1); // the network drops; the run goes on in the worker
    let (mut w2, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let second = w2.next_lease().unwrap();
    assert_eq!((first.job, first.task), (second.job, second.task));

    // A stranger naming the lease is refused (acknowledged, not stored).
    let (mut stranger, _) = ProtoWorker::join(c.addr, 0).unwrap();
    stranger.send(&result(first.lease, b"forged")).unwrap();
    wait_ack(&mut stranger, first.lease);
    // The first worker reconnects as itself and reports the run it finished meanwhile.
    let (mut back, _) = ProtoWorker::resume(c.addr, 1, welcome.resume).unwrap();
    back.send(&result(first.lease, b"from the first attempt")).unwrap();
    wait_ack(&mut back, first.lease);
    match w2.recv().unwrap() {
        Received::Msg(CoordinatorMessage::Cancel(cancel)) => assert_eq!(cancel.leases, [second.lease]),
        other => panic!("expected the newer attempt to be cancelled, got {other:?}"),
    }
    w2.send(&result(second.lease, b"from the cancelled attempt")).unwrap();
    wait_ack(&mut w2, second.lease);
    idlecore_e2e::wait_for("job completion", std::time::Duration::from_secs(10), || {
        (api.status(job).unwrap()["state"] == "completed").then_some(())
    })
    .unwrap();
    let results = api.results(job).unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].2, b"from the first attempt");
}

#[test]
fn leases_ready_together_travel_in_one_frame() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(5)).unwrap();
    let stdins: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    api.create_job(&hash, &stdins, &[], json!({})).unwrap();
    let (mut w, _) = ProtoWorker::join(c.addr, 4).unwrap();
    let batch = match w.recv_frame().unwrap() {
        Received::Msg(CoordinatorMessage::Leases(batch)) => batch,
        other => panic!("expected one batch of the four leases granted at once, got {other:?}"),
    };
    assert_eq!(batch.len(), 4);
    let tasks: std::collections::BTreeSet<u32> = batch.iter().map(|l| l.task).collect();
    assert_eq!(tasks.len(), 4, "four different tasks");
    // One result frees one slot: the next lease comes alone.
    w.send(&result(batch[0].lease, b"x")).unwrap();
    let next = wait_ack(&mut w, batch[0].lease);
    let next = if next.is_empty() { vec![w.next_lease().unwrap()] } else { next };
    assert_eq!(next.len(), 1);
}

#[test]
fn big_leases_are_not_batched_past_a_megabyte() {
    let dir = tempfile::tempdir().unwrap();
    // Inputs inline in the lease, not blobs.
    let c = common::start_extra(dir.path(), &["--blob-threshold-kib", "1024"]);
    let api = c.api();
    let hash = api.upload(&common::module(6)).unwrap();
    let stdins: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 600 * 1024]).collect();
    api.create_job(&hash, &stdins, &[], json!({})).unwrap();
    let (mut w, _) = ProtoWorker::join(c.addr, 3).unwrap();
    for _ in 0..3 {
        match w.recv_frame().unwrap() {
            Received::Msg(CoordinatorMessage::Lease(l)) => assert_eq!(l.stdin.len(), 600 * 1024),
            other => panic!("expected each 600 KiB lease alone, got {:?}", std::mem::discriminant(&other)),
        }
    }
}

#[test]
fn task_failures_are_retried_then_recorded_with_every_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(3)).unwrap();
    let job = api.create_job(&hash, &[vec![]], &[], json!({ "max_attempts": 2 })).unwrap();
    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let fail = |lease, kind, message: &str| WorkerMessage::Failure(TaskFailure { lease, kind, message: message.into() });
    let l = w.next_lease().unwrap();
    w.send(&fail(l.lease, FailureKind::ExecutorCrashed, "tab crashed")).unwrap();
    let l = w.next_lease().unwrap();
    w.send(&fail(l.lease, FailureKind::Trap, "unreachable")).unwrap();
    let l = w.next_lease().unwrap();
    w.send(&fail(l.lease, FailureKind::Timeout, "too slow")).unwrap();
    idlecore_e2e::wait_for("the task to fail", std::time::Duration::from_secs(10), || {
        (api.status(job).unwrap()["state"] == "completed").then_some(())
    })
    .unwrap();
    let status = api.status(job).unwrap();
    assert_eq!((status["done"].as_u64(), status["failed"].as_u64()), (Some(0), Some(1)));
    let results = api.results(job).unwrap();
    let error = results[0].3.clone().unwrap();
    assert_eq!(error, "executor_crashed: tab crashed\ntrap: unreachable\ntimeout: too slow");
}

#[test]
fn bad_frames_get_a_clear_error_and_the_coordinator_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());

    let mut w = ProtoWorker::connect(c.addr).unwrap();
    w.send_raw(vec![0xde, 0xad, 0xbe, 0xef]).unwrap();
    assert!(w.expect_error(ErrorCode::Malformed).unwrap().contains("unknown message type"));

    let mut w = ProtoWorker::connect(c.addr).unwrap();
    w.send_raw(vec![0, 4]).unwrap(); // a Hello of this version cut short
    assert!(w.expect_error(ErrorCode::Malformed).unwrap().contains("malformed"));

    let mut w = ProtoWorker::connect(c.addr).unwrap();
    w.send_text("{\"hello\": 1}").unwrap();
    assert!(w.expect_error(ErrorCode::Malformed).unwrap().contains("binary"));

    // Before `Hello` (and before any lease) a frame may be small only: a
    // large one ends the connection while it is still arriving.
    let mut w = ProtoWorker::connect(c.addr).unwrap();
    let cut = w.send_raw(vec![0; 1 << 20]).is_err() || matches!(w.recv(), Ok(Received::Closed) | Err(_));
    assert!(cut, "a 1 MiB frame before Hello is cut off");
    // A worker holding a lease may send a frame as large as a result; past
    // the protocol's maximum it is told why.
    let api = c.api();
    let job = api.create_job(&api.upload(&common::module(9)).unwrap(), &[b"x".to_vec()], &[], json!({})).unwrap();
    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    w.next_lease().unwrap();
    w.send_raw(vec![0; MAX_FRAME_BYTES + 1]).unwrap();
    assert!(w.expect_error(ErrorCode::TooLarge).unwrap().contains("exceeds"));
    let auth = format!("Bearer {}", common::TOKEN);
    assert_eq!(api.request("POST", &format!("/api/jobs/{job}/cancel"), Some(&auth), vec![]).unwrap().status, 200);

    let mut w = ProtoWorker::connect(c.addr).unwrap();
    w.send(&WorkerMessage::Hello(Hello { version: 99, slots: 1, agent: String::new(), resume: None })).unwrap();
    assert!(w.expect_error(ErrorCode::UnsupportedVersion).unwrap().contains("99"));

    // A worker of the previous version: its Hello (version 3, 1 slot, agent "v3")
    // has no `resume`, so it does not decode; the version is still the answer.
    let mut w = ProtoWorker::connect(c.addr).unwrap();
    w.send_raw(vec![0, 3, 1, 2, b'v', b'3']).unwrap();
    assert!(w.expect_error(ErrorCode::UnsupportedVersion).unwrap().contains("version 3 is not supported"));

    let mut w = ProtoWorker::connect(c.addr).unwrap();
    w.send(&WorkerMessage::Heartbeat(Heartbeat { leases: vec![] })).unwrap();
    w.expect_error(ErrorCode::UnexpectedMessage).unwrap();

    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    w.send(&WorkerMessage::Hello(Hello { version: 1, slots: 1, agent: String::new(), resume: None })).unwrap();
    w.expect_error(ErrorCode::UnexpectedMessage).unwrap();

    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    w.send_raw(vec![1, 5]).unwrap(); // a Result cut short, mid-session
    w.expect_error(ErrorCode::Malformed).unwrap();

    // After all of that, a well-behaved worker still gets work done.
    let api = c.api();
    let hash = api.upload(&common::module(4)).unwrap();
    let job = api.create_job(&hash, &[b"x".to_vec()], &[], json!({})).unwrap();
    let (mut good, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let l = good.next_lease().unwrap();
    good.send(&result(l.lease, b"fine")).unwrap();
    wait_ack(&mut good, l.lease);
    assert_eq!(api.status(job).unwrap()["done"], 1);
}

#[test]
fn silent_workers_are_dropped_and_their_leases_requeued() {
    let dir = tempfile::tempdir().unwrap();
    // Heartbeat 200 ms: silence for 600 ms ends the session.
    let c = common::start_with(dir.path(), Some(common::TOKEN), None, 200);
    let api = c.api();
    let hash = api.upload(&common::module(5)).unwrap();
    api.create_job(&hash, &[vec![]], &[], json!({})).unwrap();
    let (mut quiet, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let first = quiet.next_lease().unwrap();
    match quiet.recv().unwrap() {
        Received::Msg(CoordinatorMessage::Error(e)) => assert_eq!(e.code, ErrorCode::UnexpectedMessage),
        other => panic!("expected the silent session to end, got {other:?}"),
    }
    let (mut next, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let again = next.next_lease().unwrap();
    assert_eq!(again.task, first.task);
}

#[test]
fn a_paused_worker_gets_no_leases_and_its_withdrawn_ones_run_elsewhere_for_free() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(3)).unwrap();
    let stdins: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i]).collect();
    let job = api.create_job(&hash, &stdins, &[], json!({ "max_attempts": 1 })).unwrap();

    let (mut w, _) = ProtoWorker::join(c.addr, 2).unwrap();
    let a = w.next_lease().unwrap();
    let b = w.next_lease().unwrap();
    // Pause, then give both back: with capacity 0 nothing new comes.
    w.send(&WorkerMessage::Capacity(Capacity { slots: 0 })).unwrap();
    for l in [&a, &b] {
        let failure = TaskFailure { lease: l.lease, kind: FailureKind::Withdrawn, message: "paused".into() };
        w.send(&WorkerMessage::Failure(failure)).unwrap();
        assert!(wait_ack(&mut w, l.lease).is_empty(), "no lease while paused");
    }
    w.set_read_timeout(std::time::Duration::from_millis(500)).unwrap();
    assert!(w.recv().is_err(), "nothing is sent to a paused worker");
    w.set_read_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert_eq!(api.stats().unwrap()["leases"], 0);
    assert_eq!(api.stats().unwrap()["withdrawn"], 2);

    // Withdrawals do not count against max_attempts = 1: resuming runs all four.
    w.send(&WorkerMessage::Capacity(Capacity { slots: 1 })).unwrap();
    let mut pending = vec![];
    for _ in 0..4 {
        let l = if pending.is_empty() { w.next_lease().unwrap() } else { pending.remove(0) };
        assert!(pending.is_empty(), "capacity 1 means one lease at a time");
        w.send(&result(l.lease, b"ok")).unwrap();
        pending.extend(wait_ack(&mut w, l.lease));
    }
    idlecore_e2e::wait_for("job completion", std::time::Duration::from_secs(10), || {
        (api.status(job).unwrap()["state"] == "completed").then_some(())
    })
    .unwrap();
    assert!(api.results(job).unwrap().iter().all(|r| r.1 == "done"));
}

#[test]
fn a_withdrawal_from_an_earlier_session_leaves_the_live_attempt_alone() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(5)).unwrap();
    let job = api.create_job(&hash, &[b"only".to_vec()], &[], json!({})).unwrap();
    let (mut w1, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let first = w1.next_lease().unwrap();
    drop(w1);
    let (mut w2, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let second = w2.next_lease().unwrap();

    // The first worker comes back paused and gives its old lease back: nothing to take over.
    let (mut back, _) = ProtoWorker::join(c.addr, 0).unwrap();
    let failure = TaskFailure { lease: first.lease, kind: FailureKind::Withdrawn, message: "paused".into() };
    back.send(&WorkerMessage::Failure(failure)).unwrap();
    assert!(wait_ack(&mut back, first.lease).is_empty(), "a worker joined with 0 slots gets no lease");
    w2.set_read_timeout(std::time::Duration::from_millis(500)).unwrap();
    assert!(w2.recv().is_err(), "the live attempt is not cancelled");
    w2.set_read_timeout(std::time::Duration::from_secs(20)).unwrap();
    w2.send(&result(second.lease, b"from the live attempt")).unwrap();
    wait_ack(&mut w2, second.lease);
    idlecore_e2e::wait_for("job completion", std::time::Duration::from_secs(10), || {
        (api.status(job).unwrap()["state"] == "completed").then_some(())
    })
    .unwrap();
    assert_eq!(api.results(job).unwrap()[0].2, b"from the live attempt");
}
