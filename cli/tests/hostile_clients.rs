//! HTTP clients as an attacker would write them, over raw sockets against the
//! real binary: oversized and anonymous uploads, bodies and headers sent a
//! byte at a time or never, and floods of connections and upgrades. Each must
//! be answered or cut off without the coordinator holding what was sent, and
//! the coordinator must keep answering everyone else.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Sends `head` (request line and headers, without the blank line) and
/// `body`, and reads what comes back until the server closes or `wait` passes.
fn exchange(addr: SocketAddr, head: &str, body: &[u8], wait: Duration) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let started = Instant::now();
    s.write_all(format!("{head}\r\n\r\n").as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") && !head.contains("keep") {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), started.elapsed())
}

fn status(reply: &str) -> u16 {
    reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn uploads_are_refused_before_their_bodies_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let (_, peak_before) = idlecore_e2e::memory_kib(c.pid()).unwrap();
    // Past the limit (64 MiB for modules): 413 from the header alone, token or not.
    for auth in ["", &format!("\r\nAuthorization: Bearer {}", common::TOKEN)] {
        let head = format!("POST /api/modules HTTP/1.1\r\nHost: x\r\nContent-Length: {}{auth}", 600 << 20);
        let (reply, _) = exchange(c.addr, &head, b"", Duration::from_secs(5));
        assert_eq!(status(&reply), 413, "{reply}");
    }
    // Within the limit but anonymous: 401 at once, with none of the body sent.
    for path in ["/api/modules", "/api/blobs", "/api/jobs"] {
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}", 60 << 20);
        let (reply, _) = exchange(c.addr, &head, b"", Duration::from_secs(5));
        assert_eq!(status(&reply), 401, "{path}: {reply}");
    }
    // Four anonymous uploads of a whole body each: each answered 401, none kept.
    let body = vec![0u8; 48 << 20];
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let head = format!("POST /api/modules HTTP/1.1\r\nHost: x\r\nContent-Length: {}", body.len());
                let (reply, _) = exchange(c.addr, &head, &body, Duration::from_secs(20));
                assert!(reply.is_empty() || status(&reply) == 401, "{reply}");
            });
        }
    });
    let (_, peak_after) = idlecore_e2e::memory_kib(c.pid()).unwrap();
    let grown = (peak_after.saturating_sub(peak_before)) >> 10;
    assert!(grown < 64, "peak memory grew by {grown} MiB for 192 MiB of anonymous uploads");
    assert!(c.api().stats().is_ok(), "still serving");
}

/// A body refused before it was read is left on its connection, which then
/// closes: the answer says so (`Connection: close`), so a client that pools
/// connections sends its next request on a new one instead of losing it.
#[test]
fn refused_uploads_close_their_connection_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--max-blob-mib", "1"]);
    let http = reqwest::blocking::Client::new();
    let url = format!("{}/api/blobs", c.base_url());
    let good = format!("Bearer {}", common::TOKEN);
    for round in 0..40 {
        let (auth, size, want) = match round % 3 {
            0 => ("Bearer wrong", 300_000, 401),
            1 => (good.as_str(), (1 << 20) + 1, 413),
            _ => ("", 300_000, 401),
        };
        let mut req = http.post(&url).body(vec![7u8; size]);
        if !auth.is_empty() {
            req = req.header("Authorization", auth);
        }
        let refused = req.send().unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(refused.status().as_u16(), want);
        assert_eq!(refused.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]), "round {round}");
        drop(refused.bytes());
        // The next request on the same client is answered.
        let next = http.post(&url).header("Authorization", &good).body(vec![round as u8; 1000]).send();
        assert_eq!(next.unwrap_or_else(|e| panic!("after round {round}: {e:?}")).status().as_u16(), 201);
    }
    // Answers to requests without a body keep their connection.
    let kept = http.get(format!("{}/api/stats", c.base_url())).send().unwrap();
    assert!(kept.headers().get("connection").is_none());
}

/// A request's headers, or its body, sent in part and then nothing: the
/// connection is closed within the 10 s deadline, not held.
#[test]
fn half_sent_requests_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let mut s = TcpStream::connect(c.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "half-sent headers held for {took:?}");
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(n == 0 || status(&answer) == 408, "{answer}");
    // A body promised and never sent (the token is right: the body is awaited).
    let head = format!("POST /api/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1000", common::TOKEN);
    let (reply, took) = exchange(c.addr, &head, b"{\"mod", Duration::from_secs(30));
    assert!(took < Duration::from_secs(20), "a stalled body held for {took:?}: {reply}");
    assert!(reply.is_empty() || status(&reply) >= 400, "{reply}");
    assert!(c.api().stats().is_ok(), "still serving");
}

/// Connections past the per-address cap are closed at once; others' are not
/// affected, and closing some makes room again.
#[test]
fn connections_are_capped_per_address_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--max-connections-per-address", "20", "--max-connections", "1000"]);
    let held: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(c.addr).unwrap()).collect();
    // Let the coordinator count them before the next one.
    std::thread::sleep(Duration::from_millis(200));
    let (reply, _) = exchange(c.addr, "GET /api/stats HTTP/1.1\r\nHost: x", b"", Duration::from_secs(5));
    assert!(reply.is_empty(), "the 21st connection from one address is closed unanswered: {reply}");
    drop(held);
    idlecore_e2e::wait_for("room again", Duration::from_secs(5), || {
        let (reply, _) = exchange(c.addr, "GET /api/stats HTTP/1.1\r\nHost: x", b"", Duration::from_secs(5));
        (status(&reply) == 200).then_some(())
    })
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--max-connections", "10"]);
    let held: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(c.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (reply, _) = exchange(c.addr, "GET /api/stats HTTP/1.1\r\nHost: x", b"", Duration::from_secs(5));
    assert!(reply.is_empty(), "past the global cap: {reply}");
    drop(held);
}

/// WebSocket upgrades past the per-address rate get 429 with Retry-After.
#[test]
fn worker_connections_per_second_are_capped_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--max-upgrades-per-second", "2"]);
    let head = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    let statuses: Vec<u16> = (0..30).map(|_| status(&exchange(c.addr, head, b"", Duration::from_secs(5)).0)).collect();
    let upgraded = statuses.iter().filter(|s| **s == 101).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!((20..=22).contains(&upgraded), "a burst of 20 (and what refilled meanwhile): {statuses:?}");
    assert_eq!(upgraded + limited, 30, "{statuses:?}");
    let (reply, _) = exchange(c.addr, head, b"", Duration::from_secs(5));
    assert!(status(&reply) == 101 || reply.to_ascii_lowercase().contains("retry-after: 1"), "{reply}");
}

/// A page of results is cut short by bytes, not held whole: four results of
/// 12 MiB each come three to a page, and paging on from the last task gets
/// the fourth.
#[test]
fn a_page_of_large_results_is_bounded_in_bytes() {
    use idlecore_e2e::ProtoWorker;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let stdins: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i]).collect();
    let job = api.create_job(&api.upload(&common::module(21)).unwrap(), &stdins, &[], json!({ "max_output_bytes": 13 << 20 })).unwrap();
    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    for _ in 0..4 {
        let lease = w.next_lease().unwrap();
        w.report(&common::result(lease.lease, &vec![b'x'; 12 << 20])).unwrap();
    }
    idlecore_e2e::wait_for("completion", Duration::from_secs(20), || (api.status(job).unwrap()["state"] == "completed").then_some(()))
        .unwrap();
    let auth = format!("Bearer {}", common::TOKEN);
    let page = api.request("GET", &format!("/api/jobs/{job}/results?limit=10"), Some(&auth), vec![]).unwrap();
    let tasks: Vec<u64> = page.body.as_array().unwrap().iter().map(|r| r["task"].as_u64().unwrap()).collect();
    assert_eq!(tasks, [0, 1, 2], "32 MiB of outputs to a page");
    let rest = api.request("GET", &format!("/api/jobs/{job}/results?limit=10&after=2"), Some(&auth), vec![]).unwrap();
    assert_eq!(rest.body.as_array().unwrap().len(), 1);
    assert_eq!(api.results(job).unwrap().len(), 4, "the client's paging gets all");
}

/// The data directory and its database are the owner's alone.
#[test]
fn the_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _c = common::start(&data);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("idlecore.sqlite3")), 0o600);
    // The journal files too (the harness's own log sits beside them).
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("idlecore.sqlite3") {
            assert_eq!(mode(&path) & 0o077, 0, "{} is open to others", path.display());
        }
    }
}

/// Worker sessions count against the caps for as long as they are open,
/// not only while their connection spoke HTTP.
#[test]
fn worker_sessions_count_against_the_connection_caps() {
    use idlecore_e2e::ProtoWorker;
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--max-connections-per-address", "20"]);
    let sessions: Vec<ProtoWorker> = (0..20).map(|_| ProtoWorker::join(c.addr, 0).unwrap().0).collect();
    let (reply, _) = exchange(c.addr, "GET /api/stats HTTP/1.1\r\nHost: x", b"", Duration::from_secs(5));
    assert!(reply.is_empty(), "a 21st connection beside 20 sessions: {reply}");
    drop(sessions);
    idlecore_e2e::wait_for("room again", Duration::from_secs(5), || {
        let (reply, _) = exchange(c.addr, "GET /api/stats HTTP/1.1\r\nHost: x", b"", Duration::from_secs(5));
        (status(&reply) == 200).then_some(())
    })
    .unwrap();
}
