//! `loadgen`: many simulated workers in one process, each speaking the worker
//! protocol over its own WebSocket, running each leased task as a native
//! program (`--exec`), and misbehaving on request. Used by `cargo xtask chaos`.
//!
//! ```text
//! loadgen --coordinator HOST:PORT --exec PROGRAM [--workers N] [--slow-ms MS]
//!         [--drop P] [--fail P] [--duplicate P] [--stale P] [--seed S]
//! ```
//!
//! With probability P per lease a worker: `--drop` closes its socket without
//! answering (a network drop; it reconnects with backoff); `--fail` reports an
//! infrastructure failure (retried elsewhere for free); `--duplicate` sends
//! its result twice; `--stale` also sends a result for a lease it never had.
//! Workers reconnect with exponential backoff and jitter whenever the
//! coordinator is unreachable, and run until the process is killed.

use anyhow::{bail, Context};
use idlecore_e2e::proto_worker::{ProtoWorker, Received};
use idlecore_e2e::Rng;
use idlecore_protocol::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Options {
    coordinator: SocketAddr,
    exec: PathBuf,
    workers: u32,
    slow_ms: u64,
    drop: f64,
    fail: f64,
    duplicate: f64,
    stale: f64,
    seed: u64,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        coordinator: "127.0.0.1:0".parse()?,
        exec: PathBuf::new(),
        workers: 4,
        slow_ms: 0,
        drop: 0.0,
        fail: 0.0,
        duplicate: 0.0,
        stale: 0.0,
        seed: 1,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let p = || -> anyhow::Result<f64> {
            let p: f64 = value.parse().with_context(|| format!("{flag}: not a number"))?;
            if !(0.0..=1.0).contains(&p) {
                bail!("{flag}: a probability is between 0 and 1");
            }
            Ok(p)
        };
        match flag.as_str() {
            "--coordinator" => o.coordinator = value.parse().context("--coordinator HOST:PORT")?,
            "--exec" => o.exec = value.into(),
            "--workers" => o.workers = value.parse().context("--workers")?,
            "--slow-ms" => o.slow_ms = value.parse().context("--slow-ms")?,
            "--drop" => o.drop = p()?,
            "--fail" => o.fail = p()?,
            "--duplicate" => o.duplicate = p()?,
            "--stale" => o.stale = p()?,
            "--seed" => o.seed = value.parse().context("--seed")?,
            other => bail!("unknown flag {other}"),
        }
    }
    if o.exec.as_os_str().is_empty() {
        bail!("--exec PROGRAM is required");
    }
    if o.coordinator.port() == 0 {
        bail!("--coordinator HOST:PORT is required");
    }
    Ok(o)
}

/// A lease's stdin: its own, or fetched from the coordinator when it names a
/// stdin blob (with its SHA-256 checked). Input files are not supported.
fn stdin_of(o: &Options, lease: &Lease) -> Result<Vec<u8>, String> {
    use idlecore_protocol::BlobTarget;
    let mut stdin = lease.stdin.clone();
    for b in &lease.blobs {
        if b.target != BlobTarget::Stdin {
            return Err("loadgen gives tasks no input files".into());
        }
        let url = format!("http://{}/blobs/{}", o.coordinator, b.hash);
        let bytes = reqwest::blocking::get(&url)
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.bytes())
            .map_err(|e| format!("fetching {url}: {e}"))?;
        if idlecore_protocol::Sha256Hash::of(&bytes) != b.hash {
            return Err(format!("{url} sent other bytes"));
        }
        stdin = bytes.to_vec();
    }
    Ok(stdin)
}

/// Runs the task natively, as a browser would run its module.
fn execute(o: &Options, lease: &Lease) -> WorkerMessage {
    let started = Instant::now();
    let stdin = match stdin_of(o, lease) {
        Ok(s) => s,
        Err(message) => return WorkerMessage::Failure(TaskFailure { lease: lease.lease, kind: FailureKind::InputFetch, message }),
    };
    let run = || -> anyhow::Result<std::process::Output> {
        let mut child = Command::new(&o.exec)
            .args(&lease.args)
            .envs(lease.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(&stdin)?;
        Ok(child.wait_with_output()?)
    };
    match run() {
        Ok(out) => {
            std::thread::sleep(Duration::from_millis(o.slow_ms));
            WorkerMessage::Result(TaskResult {
                lease: lease.lease,
                exit_code: out.status.code().unwrap_or(128),
                stdout: out.stdout,
                stderr: out.stderr,
                elapsed_ms: started.elapsed().as_millis() as u32,
                fuel_used: 0,
                files: vec![],
            })
        }
        Err(e) => WorkerMessage::Failure(TaskFailure {
            lease: lease.lease,
            kind: FailureKind::ExecutorCrashed,
            message: format!("loadgen could not run {}: {e}", o.exec.display()),
        }),
    }
}

/// One session: joins, then serves leases until the connection ends or the
/// worker decides to drop it. An error means it never got going (or broke).
fn session(o: &Options, rng: &mut Rng, name: &str) -> anyhow::Result<()> {
    let mut w = ProtoWorker::connect(o.coordinator)?;
    w.send(&WorkerMessage::Hello(Hello { version: PROTOCOL_VERSION, slots: 1, agent: name.into(), resume: None }))?;
    match w.recv()? {
        Received::Msg(CoordinatorMessage::Welcome(_)) => {}
        other => bail!("expected Welcome, got {other:?}"),
    }
    loop {
        let lease = match w.recv()? {
            Received::Msg(CoordinatorMessage::Lease(l)) => l,
            Received::Msg(CoordinatorMessage::Ack(_) | CoordinatorMessage::Cancel(_)) => continue,
            Received::Msg(CoordinatorMessage::Error(e)) => {
                bail!("coordinator error: {:?}: {}", e.code, e.message)
            }
            Received::Msg(other) => bail!("unexpected {other:?}"),
            Received::Closed => return Ok(()),
        };
        if rng.chance(o.drop) {
            return Ok(());
        }
        w.send(&WorkerMessage::Heartbeat(Heartbeat { leases: vec![lease.lease] }))?;
        let report = if rng.chance(o.fail) {
            WorkerMessage::Failure(TaskFailure {
                lease: lease.lease,
                kind: FailureKind::ExecutorCrashed,
                message: "loadgen: simulated executor crash".into(),
            })
        } else {
            execute(o, &lease)
        };
        if rng.chance(o.stale) {
            // A lease id no coordinator ever issued: must be refused.
            let mut stale = report.clone();
            if let WorkerMessage::Result(r) = &mut stale {
                r.lease = (rng.next_u64() as u128) << 64 | rng.next_u64() as u128;
                r.stdout = b"stale result that must never be stored".to_vec();
                w.send(&stale)?;
            }
        }
        w.send(&report)?;
        if rng.chance(o.duplicate) {
            w.send(&report)?;
        }
    }
}

fn worker(o: Arc<Options>, index: u32) {
    let mut rng = Rng(o.seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
    let name = format!("loadgen-{index}");
    let mut backoff = Duration::from_millis(100);
    loop {
        if session(&o, &mut rng, &name).is_ok() {
            backoff = Duration::from_millis(100);
        }
        // Exponential backoff with jitter, capped, as browsers do.
        let jitter = 0.5 + (rng.next_u64() % 1000) as f64 / 2000.0;
        std::thread::sleep(backoff.mul_f64(jitter));
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::exit(2);
        }
    };
    let threads: Vec<_> = (0..o.workers)
        .map(|i| {
            let o = o.clone();
            std::thread::spawn(move || worker(o, i))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
