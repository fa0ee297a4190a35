//! The coordinator behind a reverse proxy, as docs/security.md deploys it:
//! the CLI over `https://` through a TLS-terminating proxy with a private CA,
//! and workers' networks read from `X-Forwarded-For` only when the proxy is
//! trusted (`--trusted-proxy`), so result validation keeps replicas on
//! distinct networks behind it and a client cannot pick its own network.

mod common;

use idlecore_e2e::front::{FrontConfig, FrontProxy, TestCa};
use idlecore_e2e::proto_worker::Received;
use idlecore_e2e::ProtoWorker;
use idlecore_protocol::*;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

/// The address the test's proxies connect from: only it is trusted.
const PROXY_IP: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Answers every lease with `stdout` until the connection closes; returns
/// how many leases it ran.
fn answer_all(mut w: ProtoWorker, stdout: &'static [u8]) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut ran = 0;
        while let Ok(Received::Msg(msg)) = w.recv() {
            if let CoordinatorMessage::Lease(l) = msg {
                ran += 1;
                if w.send(&common::result(l.lease, stdout)).is_err() {
                    break;
                }
            }
        }
        ran
    })
}

/// A worker joining through a proxy that connects from `PROXY_IP` and says
/// it forwards for `client`.
fn behind_proxy(upstream: SocketAddr, client: &str) -> (FrontProxy, ProtoWorker) {
    let proxy = FrontProxy::start(
        upstream,
        FrontConfig { upstream_from: Some(ip(PROXY_IP)), forwarded_for: Some(ip(client)), ..Default::default() },
    )
    .unwrap();
    let (w, _) = ProtoWorker::join(proxy.addr, 1).unwrap();
    (proxy, w)
}

/// A validated job (two replicas, no spot checks) of one task; waits for it
/// to complete and returns its `checks.results`.
fn one_replicated_task(c: &idlecore_e2e::Coordinator) -> u64 {
    let api = c.api();
    let module = api.upload(&common::module(1)).unwrap();
    let job = api.create_job(&module, &[b"x".to_vec()], &[], serde_json::json!({})).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = api.status(job).unwrap();
        if s["state"] == "completed" {
            assert_eq!(s["done"], 1, "{s}");
            return s["checks"]["results"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "the job did not complete: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which of the workers got a lease first, and the lease.
fn first_lease(workers: &mut [ProtoWorker; 2]) -> (usize, Lease) {
    for (i, w) in workers.iter_mut().enumerate() {
        if let Ok(Received::Msg(CoordinatorMessage::Lease(l))) = w.recv() {
            return (i, l);
        }
    }
    panic!("neither worker got the task")
}

fn validating(dir: &std::path::Path) -> idlecore_e2e::Coordinator {
    common::start_extra(
        &dir.join("data"),
        &["--trusted-proxy", &format!("{PROXY_IP}/32"), "--replicas", "2", "--max-replicas", "2", "--spot-checks", "0"],
    )
}

#[test]
fn replicas_go_to_distinct_networks_behind_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let c = validating(dir.path());
    // Two workers of one network behind the proxy: a task's second replica
    // may not go to the other one.
    let (_p1, a) = behind_proxy(c.addr, "203.0.113.7");
    let (_p2, b) = behind_proxy(c.addr, "203.0.113.7");
    let api = c.api();
    let module = api.upload(&common::module(1)).unwrap();
    let job = api.create_job(&module, &[b"x".to_vec()], &[], serde_json::json!({})).unwrap();
    let mut workers = [a, b];
    for w in &mut workers {
        w.set_read_timeout(Duration::from_millis(1500)).unwrap();
    }
    // The one that got the task reports; the second replica waits for another network.
    let (holder, lease) = first_lease(&mut workers);
    workers[holder].send(&common::result(lease.lease, b"same")).unwrap();
    let waiting = &mut workers[1 - holder];
    // (A heartbeat first: a worker silent for three periods, 3 s here, is dropped.)
    waiting.send(&WorkerMessage::Heartbeat(Heartbeat { leases: vec![] })).unwrap();
    match waiting.recv() {
        Ok(Received::Msg(CoordinatorMessage::Lease(l))) => panic!("a second replica went to the same network: {l:?}"),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => {} // nothing within 1.5 s
    }
    assert_eq!(api.status(job).unwrap()["done"], 0, "one network alone cannot decide a task");
    drop(workers);

    // Workers of two networks decide it, and the next job's task too.
    let (_p3, c1) = behind_proxy(c.addr, "203.0.113.8");
    let (_p4, c2) = behind_proxy(c.addr, "203.0.113.9");
    let (t1, t2) = (answer_all(c1, b"same"), answer_all(c2, b"same"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.status(job).unwrap()["state"] != "completed" {
        assert!(std::time::Instant::now() < deadline, "{}", api.status(job).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(one_replicated_task(&c), 2, "two replicas decided it");
    drop(c);
    assert!(t1.join().unwrap() >= 1 && t2.join().unwrap() >= 1);
}

#[test]
fn a_client_naming_its_own_network_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let c = validating(dir.path());
    // One worker behind the trusted proxy, for network 203.0.113.20; another
    // straight to the coordinator, claiming that same network for itself. Were
    // the claim believed, the two could never take replicas of one task.
    let (_proxy, a) = behind_proxy(c.addr, "203.0.113.20");
    let (b, _) = ProtoWorker::join_with(c.addr, 1, &[("X-Forwarded-For", "203.0.113.20"), ("Forwarded", "for=203.0.113.20")]).unwrap();
    let (ta, tb) = (answer_all(a, b"same"), answer_all(b, b"same"));
    assert_eq!(one_replicated_task(&c), 2);
    drop(c);
    assert_eq!((ta.join().unwrap(), tb.join().unwrap()), (1, 1), "each ran one replica");
}

#[test]
fn the_cli_speaks_https_to_a_coordinator_behind_tls() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(&dir.path().join("data"));
    let ca = TestCa::new().unwrap();
    let front = FrontProxy::start(c.addr, FrontConfig { tls: Some(&ca), ..Default::default() }).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let module = dir.path().join("task.wasm");
    std::fs::write(&module, common::module(2)).unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("a.txt"), "abc").unwrap();
    let (w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let worker = answer_all(w, b"from a worker");
    let https = format!("https://{}", front.addr);
    let cli = |cert_file: &std::path::Path| {
        let mut cmd = Command::new(common::bin());
        cmd.env("IDLECORE_COORDINATOR", &https)
            .env("IDLECORE_TOKEN", common::TOKEN)
            .env("SSL_CERT_FILE", cert_file)
            .env_remove("SSL_CERT_DIR");
        cmd
    };
    let out = dir.path().join("out");
    let submit = cli(&ca_file).arg("submit").arg(&module).arg("--inputs").arg(&inputs).arg("--out").arg(&out).output().unwrap();
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"from a worker");
    let status = cli(&ca_file).args(["status", "1"]).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(String::from_utf8_lossy(&status.stdout).contains("job 1 completed"), "{}", String::from_utf8_lossy(&status.stdout));

    // Without the private CA among its roots, the certificate is refused (and said so).
    let empty = dir.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let refused = cli(&empty).args(["status", "1"]).output().unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(why.contains("certificate") || why.contains("UnknownIssuer"), "{why}");
    drop(c);
    worker.join().unwrap();
}
