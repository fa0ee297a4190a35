//! `swarm`: thousands of simulated workers on one event loop, for measuring
//! the coordinator's dispatch (`cargo xtask bench`). Each worker speaks the
//! worker protocol over its own WebSocket and answers every lease at once
//! (stdout = the lease's stdin), so what is measured is the coordinator.
//!
//! ```text
//! swarm --coordinator HOST:PORT --workers W [--tasks N] [--task-us D] [--threads T]
//! swarm --echo
//! ```
//!
//! It connects W workers (at most 20,000 per source address: 127.0.0.1,
//! 127.0.0.2, ...) and prints `joined W SECONDS` once all had their `Welcome`.
//! Without `--tasks` the workers stay idle (heartbeats only) until stdin
//! closes. With `--tasks N` they run leases until N results were
//! acknowledged, then it prints one JSON line: tasks per second from the
//! first lease to the N-th `Ack`, and the latency from sending a result to
//! its `Ack` (the result is durable then) at p50 / p99 / max. `--task-us D`
//! makes each worker wait D µs before answering: W / D caps the offered load.
//!
//! `swarm --echo` is the baseline server instead (see `echo.rs`).

mod echo;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use idlecore_protocol::*;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;

struct Options {
    coordinator: SocketAddr,
    workers: u32,
    tasks: Option<u64>,
    task_us: u64,
    threads: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options { coordinator: "127.0.0.1:0".parse()?, workers: 1, tasks: None, task_us: 0, threads: 1 };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--coordinator" => o.coordinator = value.parse().context("--coordinator HOST:PORT")?,
            "--workers" => o.workers = value.parse().context("--workers")?,
            "--tasks" => o.tasks = Some(value.parse().context("--tasks")?),
            "--task-us" => o.task_us = value.parse().context("--task-us")?,
            "--threads" => o.threads = value.parse().context("--threads")?,
            other => bail!("unknown flag {other}"),
        }
    }
    if o.coordinator.port() == 0 {
        bail!("--coordinator HOST:PORT is required");
    }
    if o.workers == 0 || o.threads == 0 {
        bail!("--workers and --threads are at least 1");
    }
    Ok(o)
}

/// What all workers share: counts, the latency samples, and the end.
struct Shared {
    joined: AtomicU64,
    acks: AtomicU64,
    target: u64,
    first_lease: Mutex<Option<Instant>>,
    /// Microseconds from a result sent to its `Ack`.
    latencies: Mutex<Vec<u32>>,
    all_joined: Notify,
    done: Notify,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Workers per source address: inside the ephemeral port range.
const PER_SOURCE: u32 = 20_000;

/// Connects worker `index` from its source address and completes the handshake.
async fn join(o: &Options, index: u32) -> anyhow::Result<(Socket, u32)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    // The first workers let the kernel choose the source port at connect
    // (it can reuse ports whose earlier connections are in TIME_WAIT); past
    // the ephemeral range, workers bind other loopback addresses.
    if index >= PER_SOURCE {
        let n = index / PER_SOURCE;
        let source = Ipv4Addr::new(127, 0, (n / 255) as u8, (1 + n % 255) as u8);
        socket.bind(SocketAddr::new(source.into(), 0)).with_context(|| format!("binding {source}"))?;
    }
    let stream = socket.connect(o.coordinator).await.context("connecting")?;
    stream.set_nodelay(true)?;
    // Small reads: each one first zeroes this much of the buffer (128 KiB by default).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let url = format!("ws://{}/ws", o.coordinator);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let hello = WorkerMessage::Hello(Hello { version: PROTOCOL_VERSION, slots: 1, agent: format!("swarm-{index}"), resume: None });
    ws.send(Message::Binary(encode_worker(&hello).into())).await?;
    loop {
        match ws.next().await.context("closed before Welcome")?? {
            Message::Binary(b) => match decode_coordinator(&b)? {
                CoordinatorMessage::Welcome(w) => return Ok((ws, w.heartbeat_ms)),
                other => bail!("expected Welcome, got {}", name(&other)),
            },
            Message::Close(_) => bail!("closed before Welcome"),
            _ => continue,
        }
    }
}

fn name(msg: &CoordinatorMessage) -> &'static str {
    match msg {
        CoordinatorMessage::Welcome(_) => "Welcome",
        CoordinatorMessage::Lease(_) => "Lease",
        CoordinatorMessage::Cancel(_) => "Cancel",
        CoordinatorMessage::Ack(_) => "Ack",
        CoordinatorMessage::Error(_) => "Error",
        CoordinatorMessage::Leases(_) => "Leases",
        CoordinatorMessage::Signal(_) => "Signal",
        CoordinatorMessage::Sources(_) => "Sources",
    }
}

fn result_of(lease: &Lease) -> Vec<u8> {
    encode_worker(&WorkerMessage::Result(TaskResult {
        lease: lease.lease,
        exit_code: 0,
        stdout: lease.stdin.clone(),
        stderr: vec![],
        elapsed_ms: 0,
        fuel_used: 0,
        files: vec![],
    }))
}

/// One worker after its handshake: answers leases, records result → `Ack`
/// latencies, heartbeats; runs until the process ends or the connection fails.
async fn work(mut ws: Socket, heartbeat_ms: u32, task_us: u64, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut heartbeat = tokio::time::interval(Duration::from_millis(heartbeat_ms.max(100) as u64));
    heartbeat.tick().await;
    let mut sent: HashMap<LeaseId, Instant> = HashMap::new();
    let mut running: Vec<LeaseId> = Vec::new();
    // Leases to answer, each when its `--task-us` is up. The socket is read
    // meanwhile, so an `Ack` is timed when it arrives.
    let mut answers: std::collections::VecDeque<(tokio::time::Instant, Lease)> = Default::default();
    loop {
        let next_answer = answers.front().map(|(due, _)| *due);
        tokio::select! {
            _ = tokio::time::sleep_until(next_answer.unwrap_or_else(tokio::time::Instant::now)), if next_answer.is_some() => {
                let (_, lease) = answers.pop_front().expect("checked");
                ws.send(Message::Binary(result_of(&lease).into())).await?;
                sent.insert(lease.lease, Instant::now());
            }
            _ = heartbeat.tick() => {
                let beat = WorkerMessage::Heartbeat(Heartbeat { leases: running.clone() });
                ws.send(Message::Binary(encode_worker(&beat).into())).await?;
            }
            frame = ws.next() => {
                let Some(frame) = frame else { bail!("the coordinator closed the connection") };
                let Message::Binary(bytes) = frame? else { continue };
                let leases = match decode_coordinator(&bytes)? {
                    CoordinatorMessage::Lease(l) => vec![l],
                    CoordinatorMessage::Leases(ls) => ls,
                    CoordinatorMessage::Ack(a) => {
                        if let Some(at) = sent.remove(&a.lease) {
                            let micros = at.elapsed().as_micros().min(u32::MAX as u128) as u32;
                            shared.latencies.lock().expect("not poisoned").push(micros);
                            running.retain(|l| *l != a.lease);
                            if shared.acks.fetch_add(1, Ordering::Relaxed) + 1 == shared.target {
                                shared.done.notify_one();
                            }
                        }
                        continue;
                    }
                    CoordinatorMessage::Cancel(_) => continue,
                    CoordinatorMessage::Error(e) => bail!("coordinator error: {:?}: {}", e.code, e.message),
                    other => bail!("unexpected {}", name(&other)),
                };
                shared.first_lease.lock().expect("not poisoned").get_or_insert_with(Instant::now);
                for lease in leases {
                    running.push(lease.lease);
                    if task_us > 0 {
                        let due = tokio::time::Instant::now() + Duration::from_micros(task_us);
                        answers.push_back((due, lease));
                    } else {
                        ws.send(Message::Binary(result_of(&lease).into())).await?;
                        sent.insert(lease.lease, Instant::now());
                    }
                }
            }
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(o: Options) -> anyhow::Result<()> {
    let o = Arc::new(o);
    let shared = Arc::new(Shared {
        joined: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        target: o.tasks.unwrap_or(u64::MAX),
        first_lease: Mutex::new(None),
        latencies: Mutex::new(Vec::new()),
        all_joined: Notify::new(),
        done: Notify::new(),
    });
    let started = Instant::now();
    // Handshakes a few hundred at a time, so the listen backlog never overflows.
    let handshakes = Arc::new(Semaphore::new(256));
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..o.workers {
        let (o, shared, handshakes) = (o.clone(), shared.clone(), handshakes.clone());
        workers.spawn(async move {
            let permit = handshakes.acquire_owned().await.expect("never closed");
            let (ws, heartbeat_ms) = join(&o, index).await.with_context(|| format!("worker {index}"))?;
            drop(permit);
            if shared.joined.fetch_add(1, Ordering::Relaxed) + 1 == o.workers as u64 {
                shared.all_joined.notify_one();
            }
            work(ws, heartbeat_ms, o.task_us, shared).await.with_context(|| format!("worker {index}"))
        });
    }
    loop {
        tokio::select! {
            _ = shared.all_joined.notified() => break,
            Some(joined) = workers.join_next() => joined??,
        }
    }
    println!("joined {} {:.3}", o.workers, started.elapsed().as_secs_f64());
    match o.tasks {
        None => {
            // Idle: hold every connection until stdin closes.
            tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await??;
            Ok(())
        }
        Some(_) => {
            loop {
                tokio::select! {
                    _ = shared.done.notified() => break,
                    Some(joined) = workers.join_next() => joined??,
                }
            }
            let first = shared.first_lease.lock().expect("not poisoned").context("no lease arrived")?;
            let elapsed = first.elapsed().as_secs_f64();
            let mut lat = std::mem::take(&mut *shared.latencies.lock().expect("not poisoned"));
            lat.sort_unstable();
            let acks = shared.acks.load(Ordering::Relaxed);
            println!(
                "{}",
                serde_json::json!({
                    "workers": o.workers,
                    "acks": acks,
                    "seconds": elapsed,
                    "tasks_per_s": acks as f64 / elapsed,
                    "p50_us": percentile(&lat, 0.50),
                    "p99_us": percentile(&lat, 0.99),
                    "max_us": lat.last().copied().unwrap_or(0),
                    "swarm_cpu_s": idlecore_e2e::cpu_seconds(std::process::id()).unwrap_or(f64::NAN),
                })
            );
            Ok(())
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    idlecore_coordinator::server::raise_open_files_limit();
    if args.first().map(String::as_str) == Some("--echo") {
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(echo::serve()));
        if let Err(e) = outcome {
            eprintln!("swarm --echo: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let outcome = parse(&args).and_then(|o| {
        let runtime = if o.threads == 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?
        } else {
            tokio::runtime::Builder::new_multi_thread().worker_threads(o.threads).enable_all().build()?
        };
        runtime.block_on(run(o))
    });
    if let Err(e) = outcome {
        eprintln!("swarm: {e:#}");
        std::process::exit(1);
    }
}
