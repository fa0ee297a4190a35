//! Every attack of the hostile suites at once, against one coordinator at
//! its default limits, beside a validated job that honest workers run: the
//! job completes with every output right, and the coordinator's peak memory
//! stays below 512 MiB.

mod common;

use idlecore_e2e::proto_worker::{crowd, frame_head, Received};
use idlecore_e2e::{memory_kib, ProtoWorker};
use idlecore_protocol::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn right(stdin: &[u8]) -> Vec<u8> {
    stdin.iter().rev().copied().collect()
}

fn honest(_: (), lease: &Lease) -> Vec<u8> {
    right(&lease.stdin)
}

#[test]
fn every_attack_at_once_leaves_memory_bounded_and_results_right() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--replicas", "2"]);
    let addr = c.addr;
    let api = c.api();
    let hash = api.upload(&common::module(31)).unwrap();
    let stdins: Vec<Vec<u8>> = (0..60u32).map(|i| format!("input {i}").into_bytes()).collect();
    let job = api.create_job(&hash, &stdins, &[], json!({})).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = vec![];
    let spawn = |attackers: &mut Vec<std::thread::JoinHandle<()>>, f: Box<dyn FnOnce(Arc<AtomicBool>) + Send>| {
        let stop = stop.clone();
        attackers.push(std::thread::spawn(move || f(stop)));
    };

    // Answers never read: heartbeats of 4,096 ids as fast as they go.
    spawn(
        &mut attackers,
        Box::new(move |stop| {
            let Ok((mut w, _)) = ProtoWorker::join(addr, 0) else { return };
            let _ = w.set_write_timeout(Duration::from_millis(200));
            let ids: Vec<LeaseId> =
                (0..limits::MAX_HEARTBEAT_LEASES as u128).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).collect();
            let beat = encode_worker(&WorkerMessage::Heartbeat(Heartbeat { leases: ids }));
            while !stop.load(Ordering::Relaxed) && w.send_raw(beat.clone()).is_ok() {}
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }),
    );
    // Thirty workers that take a lease, then send 15 MiB of a 16 MiB frame and stall.
    for _ in 0..30 {
        spawn(
            &mut attackers,
            Box::new(move |stop| {
                let Ok((mut w, _)) = ProtoWorker::join(addr, 1) else { return };
                let _ = w.set_read_timeout(Duration::from_secs(10));
                if !matches!(w.recv(), Ok(Received::Msg(CoordinatorMessage::Lease(_)))) {
                    return;
                }
                let _ = w.set_write_timeout(Duration::from_secs(5));
                let tcp = w.tcp();
                if tcp.write_all(&frame_head(16 << 20)).is_ok() {
                    let _ = (0..15).try_for_each(|_| tcp.write_all(&[0; 1 << 20]));
                }
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }),
        );
    }
    // Anonymous uploads of 48 MiB each.
    for _ in 0..4 {
        spawn(
            &mut attackers,
            Box::new(move |_| {
                let Ok(mut s) = TcpStream::connect(addr) else { return };
                let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
                let head = format!("POST /api/modules HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 48 << 20);
                if s.write_all(head.as_bytes()).is_ok() {
                    let _ = (0..48).try_for_each(|_| s.write_all(&[0; 1 << 20]));
                }
            }),
        );
    }
    // Two hundred connections with half a request each, held.
    spawn(
        &mut attackers,
        Box::new(move |stop| {
            let held: Vec<TcpStream> = (0..200)
                .filter_map(|_| {
                    let mut s = TcpStream::connect(addr).ok()?;
                    s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: x\r\n").ok()?;
                    Some(s)
                })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(held);
        }),
    );
    // A prober: heartbeats naming random ids and forged results for them, answers read.
    spawn(
        &mut attackers,
        Box::new(move |stop| {
            let Ok((mut w, _)) = ProtoWorker::join(addr, 0) else { return };
            let _ = w.set_read_timeout(Duration::from_millis(100));
            let mut rng = idlecore_e2e::Rng(7);
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<LeaseId> = (0..512).map(|_| (rng.next_u64() as u128) << 64 | rng.next_u64() as u128).collect();
                let forged = common::result(ids[0], b"forged");
                if w.send(&WorkerMessage::Heartbeat(Heartbeat { leases: ids })).is_err() || w.send(&forged).is_err() {
                    return;
                }
                while let Ok(Received::Msg(_)) = w.recv() {}
            }
        }),
    );
    // Worker connections faster than an address may open them.
    spawn(
        &mut attackers,
        Box::new(move |_| {
            for _ in 0..100 {
                let Ok(mut s) = TcpStream::connect(addr) else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let head = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
                let _ = s.write_all(head.as_bytes());
                let _ = s.read(&mut [0u8; 256]);
            }
        }),
    );

    // Honest workers beside them, until the job completes.
    let (finished, _) = crowd(addr, &[(); 4], honest, || (api.status(job).unwrap()["state"] == "completed").then_some(()));
    stop.store(true, Ordering::Relaxed);
    finished.expect("the validated job completes beside the attacks");
    for a in attackers {
        let _ = a.join();
    }
    let results = api.results(job).unwrap();
    assert_eq!(results.len(), stdins.len());
    for (task, state, stdout, _) in &results {
        assert_eq!((state.as_str(), stdout.clone()), ("done", right(&stdins[*task as usize])), "task {task}");
    }
    let (_, peak_kib) = memory_kib(c.pid()).unwrap();
    eprintln!("peak {} MiB", peak_kib / 1024);
    assert!(peak_kib < 512 * 1024, "peak memory {} MiB", peak_kib / 1024);
    assert!(api.stats().is_ok(), "still serving");
}
