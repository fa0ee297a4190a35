//! Workers as an attacker would write them, against the real binary: forged
//! reports for other workers' leases, heartbeats probing for live lease ids,
//! and a session that sends without ever reading. Each attack must be
//! refused or survived with the coordinator's memory bounded, while honest
//! workers are served and every result stays right.

mod common;

use common::result;
use idlecore_e2e::proto_worker::{frame_head, Received};
use idlecore_e2e::{memory_kib, ProtoWorker};
use idlecore_protocol::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A job of `stdins.len()` tasks, validation off and one attempt per task:
/// any forged report taken would be what the job owner gets.
fn unvalidated_job(api: &idlecore_e2e::api::Api, module: u8, stdins: &[&[u8]]) -> u64 {
    let hash = api.upload(&common::module(module)).unwrap();
    let tasks: Vec<_> = stdins.iter().map(|s| json!({ "stdin": base64(s) })).collect();
    let body = json!({ "module": hash, "tasks": tasks, "limits": { "max_attempts": 1 },
        "validation": { "replicas": 1, "max_replicas": 1, "spot_checks": 0.0 } });
    let r = api.post_job(&body).unwrap();
    assert!(r.status / 100 == 2, "{}", r.body);
    r.body["id"].as_u64().unwrap()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn wait_ack(w: &mut ProtoWorker, lease: LeaseId) {
    w.wait_ack(lease).unwrap();
}

#[test]
fn another_workers_lease_cannot_be_reported_failed_or_probed() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let job = unvalidated_job(&api, 11, &[b"one"]);
    let (mut honest, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let lease = honest.next_lease().unwrap();
    // The attacker knows the live id (as if it had guessed it) and holds nothing.
    let (mut attacker, _) = ProtoWorker::join(c.addr, 0).unwrap();
    let unknown = lease.lease ^ 1;
    attacker.send(&WorkerMessage::Heartbeat(Heartbeat { leases: vec![lease.lease, unknown] })).unwrap();
    match attacker.recv().unwrap() {
        Received::Msg(CoordinatorMessage::Cancel(c)) => {
            assert_eq!(c.leases, [lease.lease, unknown], "one answer, the same for a live id as for an unknown one")
        }
        other => panic!("expected one Cancel, got {other:?}"),
    }
    // A counted failure would fail the task (one attempt); a result would be stored.
    attacker.send(&WorkerMessage::Failure(TaskFailure { lease: lease.lease, kind: FailureKind::Trap, message: "forged".into() })).unwrap();
    wait_ack(&mut attacker, lease.lease);
    attacker.send(&result(lease.lease, b"forged")).unwrap();
    wait_ack(&mut attacker, lease.lease);
    // The honest worker's heartbeat still renews its lease: nothing was cancelled.
    honest.send(&WorkerMessage::Heartbeat(Heartbeat { leases: vec![lease.lease] })).unwrap();
    honest.report(&result(lease.lease, b"honest")).unwrap();
    idlecore_e2e::wait_for("completion", Duration::from_secs(10), || (api.status(job).unwrap()["state"] == "completed").then_some(()))
        .unwrap();
    let results = api.results(job).unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].1.as_str(), results[0].2.as_slice()), ("done", &b"honest"[..]), "{results:?}");
}

#[test]
fn a_forged_resume_secret_is_a_new_worker() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let job = unvalidated_job(&api, 12, &[b"one"]);
    let (mut honest, welcome) = ProtoWorker::join(c.addr, 1).unwrap();
    let lease = honest.next_lease().unwrap();
    // The worker id is in the clear; the MAC after it is not guessable.
    let mut forged = welcome.resume;
    forged[23] ^= 0x40;
    let (mut attacker, _) = ProtoWorker::resume(c.addr, 0, forged).unwrap();
    attacker.send(&result(lease.lease, b"forged")).unwrap();
    wait_ack(&mut attacker, lease.lease);
    honest.report(&result(lease.lease, b"honest")).unwrap();
    idlecore_e2e::wait_for("completion", Duration::from_secs(10), || (api.status(job).unwrap()["state"] == "completed").then_some(()))
        .unwrap();
    assert_eq!(api.results(job).unwrap()[0].2, b"honest");
}

/// Heartbeats naming 4,096 unknown ids each, sent as fast as the socket takes
/// them, by a worker that never reads: every one is answered with a `Cancel`.
/// The coordinator stops reading once its answers wait, drops the session
/// when they stay unread, and its memory hardly moves; an honest worker is
/// served meanwhile.
#[test]
fn a_worker_that_never_reads_its_answers_cannot_grow_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_with(dir.path(), Some(common::TOKEN), None, 500);
    let api = c.api();
    let (_, peak_before) = memory_kib(c.pid()).unwrap();
    let (mut attacker, _) = ProtoWorker::join(c.addr, 0).unwrap();
    attacker.set_write_timeout(Duration::from_millis(200)).unwrap();
    let ids: Vec<LeaseId> =
        (0..limits::MAX_HEARTBEAT_LEASES as u128).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).collect();
    let beat = encode_worker(&WorkerMessage::Heartbeat(Heartbeat { leases: ids }));
    let started = Instant::now();
    let (mut sent, mut blocked) = (0usize, false);
    while started.elapsed() < Duration::from_secs(6) {
        match attacker.send_raw(beat.clone()) {
            Ok(()) => sent += beat.len(),
            // The coordinator stopped reading (or closed): the socket is full.
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "the coordinator read {sent} bytes of heartbeats for 6 s without pausing");
    // Honest work goes on beside it.
    let job = unvalidated_job(&api, 13, &[b"a"]);
    let (mut honest, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let lease = honest.next_lease().unwrap();
    honest.report(&result(lease.lease, b"done")).unwrap();
    idlecore_e2e::wait_for("completion", Duration::from_secs(10), || (api.status(job).unwrap()["state"] == "completed").then_some(()))
        .unwrap();
    // The unread session is dropped within three heartbeat periods of its answers waiting.
    idlecore_e2e::wait_for("the flooding session dropped", Duration::from_secs(10), || {
        (api.stats().unwrap()["workers"].as_u64() == Some(1)).then_some(())
    })
    .unwrap();
    let (_, peak_after) = memory_kib(c.pid()).unwrap();
    let grown_mib = peak_after.saturating_sub(peak_before) / 1024;
    assert!(grown_mib < 48, "peak memory grew by {grown_mib} MiB after {} MiB of heartbeats", sent >> 20);
}

/// Workers that begin frames and never finish them: before any lease each
/// is cut off after a small part; holding a lease, they together hold no
/// more than the global budget. The coordinator's peak memory stays far
/// below what they sent, and an honest worker is served beside them.
#[test]
fn unfinished_frames_hold_a_bounded_amount_of_memory() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let (_, peak_before) = memory_kib(c.pid()).unwrap();
    // No lease: cut off at 256 KiB.
    let mut w = ProtoWorker::connect(c.addr).unwrap();
    w.set_write_timeout(Duration::from_secs(5)).unwrap();
    let tcp = w.tcp();
    tcp.write_all(&frame_head(16 << 20)).unwrap();
    let written = (0..16).take_while(|_| tcp.write_all(&[0; 1 << 20]).is_ok()).count();
    assert!(written < 16, "a 16 MiB frame before Hello was taken whole");
    // Thirty workers, each with a lease, each 15 MiB into a 16 MiB frame.
    let stdins: Vec<&[u8]> = vec![b"x"; 31];
    let job = unvalidated_job(&api, 14, &stdins);
    let mut held = vec![];
    let mut cut = 0;
    for _ in 0..30 {
        let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
        w.next_lease().unwrap();
        w.set_write_timeout(Duration::from_secs(5)).unwrap();
        let tcp = w.tcp();
        tcp.write_all(&frame_head(16 << 20)).unwrap();
        if (0..15).all(|_| tcp.write_all(&[0; 1 << 20]).is_ok()) {
            held.push(w);
        } else {
            cut += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (_, peak_after) = memory_kib(c.pid()).unwrap();
    let grown_mib = peak_after.saturating_sub(peak_before) / 1024;
    assert!(cut > 0, "450 MiB of unfinished frames were all taken");
    assert!(grown_mib < 300, "peak memory grew by {grown_mib} MiB ({cut} of 30 cut off)");
    // Served meanwhile: one task is left for an honest worker.
    let (mut honest, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let lease = honest.next_lease().unwrap();
    honest.report(&result(lease.lease, b"fine")).unwrap();
    let status = api.status(job).unwrap();
    assert!(status["done"].as_u64() >= Some(1), "{status}");
    drop(held);
}

/// A worker's self-description goes into the log escaped: it cannot forge
/// log lines or send the operator's terminal escape sequences.
#[test]
fn a_workers_agent_text_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let mut w = ProtoWorker::connect(c.addr).unwrap();
    let agent = "honest\n2026-01-01T00:00:00Z  INFO forged: job 1 completed\u{1b}[2J";
    w.send(&WorkerMessage::Hello(Hello { version: PROTOCOL_VERSION, slots: 0, agent: agent.into(), resume: None })).unwrap();
    assert!(matches!(w.recv().unwrap(), Received::Msg(CoordinatorMessage::Welcome(_))));
    let log = idlecore_e2e::wait_for("the join logged", Duration::from_secs(5), || {
        let log = c.log();
        log.contains("worker joined").then_some(log)
    })
    .unwrap();
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")), "a forged line: {log}");
    assert!(!log.contains('\u{1b}'), "a raw escape sequence in the log");
    assert!(log.contains(r"honest\n2026"), "the text is there, escaped: {log}");
}
