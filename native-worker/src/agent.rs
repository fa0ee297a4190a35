//! The native worker's event loop: the host of the agent core, as the
//! browser's agent Worker is. Every input (the coordinator connection,
//! executor threads, blob loads, the core's timer, the stop signal) is
//! handed to the core one at a time; what the core decides is then carried
//! out here.
//!
//! Stopping: the core is paused, which gives every lease back (running runs
//! are stopped and reported `Withdrawn`, a free retry elsewhere), and the
//! worker waits up to [`STOP_WAIT`] for the coordinator to acknowledge those
//! reports before it closes the connection. Nothing is lost either way: an
//! unacknowledged lease expires at the coordinator and is run again.

use crate::blobs::{DiskCache, Loader};
use crate::executors::{self, Executors, Input as TaskInput, Module};
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use idlecore_agent_core::{self as core, budget, Input, Kind, Loaded, Millis, Output};
use idlecore_protocol::{FailureKind, Sha256Hash};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// How long a stopping worker waits for its last reports to be acknowledged.
pub const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a native worker is set up (from `idlecore worker`'s flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// The coordinator: its base URL (`https://host`) or its worker endpoint (`wss://host/ws`).
    pub coordinator: String,
    /// Executors: tasks run at once.
    pub slots: u32,
    /// Share of the machine's cores to use, as the browser's budget: the
    /// executors rest between runs to keep it. `None`: each executor runs flat out.
    pub cpu: Option<f64>,
    /// The site key the worker connects under.
    pub site: Option<String>,
    /// Bytes of compiled modules kept in memory.
    pub module_memory: u64,
    /// Bytes of task inputs kept in memory.
    pub input_memory: u64,
    /// Where modules are kept between runs of the worker; `None`: not kept.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of modules kept on disk.
    pub disk_cache: u64,
}

/// The worker endpoint and the base URL blobs are fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub socket: String,
    pub http: String,
}

/// `http(s)://host[:port][/prefix]` gives `ws(s)://host[:port][/prefix]/ws`;
/// a `ws(s)://` URL is the endpoint itself. Blobs come from the same host
/// over HTTP(S).
pub fn endpoints(coordinator: &str, site: Option<&str>) -> anyhow::Result<Endpoints> {
    let mut url = reqwest::Url::parse(coordinator).with_context(|| format!("--coordinator {coordinator:?} is not a URL"))?;
    let (socket_scheme, http_scheme) = match url.scheme() {
        "http" | "ws" => ("ws", "http"),
        "https" | "wss" => ("wss", "https"),
        other => bail!("--coordinator must be an http(s):// or ws(s):// URL, not {other}://"),
    };
    if url.host_str().is_none() {
        bail!("--coordinator {coordinator:?} names no host");
    }
    if matches!(url.scheme(), "http" | "https") {
        let path = format!("{}/ws", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    url.set_scheme(socket_scheme).map_err(|()| anyhow::anyhow!("cannot use {coordinator:?}"))?;
    if let Some(site) = site {
        url.query_pairs_mut().append_pair("site", site);
    }
    let mut http = url.clone();
    http.set_scheme(http_scheme).map_err(|()| anyhow::anyhow!("cannot use {coordinator:?}"))?;
    http.set_path("");
    http.set_query(None);
    Ok(Endpoints { socket: url.to_string(), http: http.to_string().trim_end_matches('/').to_string() })
}

enum Event {
    Opened(u32),
    Frame(u32, Vec<u8>),
    Closed(u32, String),
    Executor(executors::Event),
    Loaded(Sha256Hash, Kind, Result<Loaded<Module, TaskInput>, (FailureKind, String)>),
}

type Core = core::Agent<Module, TaskInput>;

struct Worker {
    core: Core,
    origin: Instant,
    endpoints: Endpoints,
    events: mpsc::UnboundedSender<Event>,
    /// The current connection's number and its outgoing frames.
    socket: Option<(u32, mpsc::UnboundedSender<Vec<u8>>)>,
    executors: Executors,
    loader: Loader,
    state: &'static str,
    fatal: Option<String>,
}

/// Runs a worker until `shutdown` completes (then stops as the module docs
/// say) or it cannot go on.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let endpoints = endpoints(&cfg.coordinator, cfg.site.as_deref())?;
    let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let slots = cfg.slots.max(1);
    let plan = match cfg.cpu {
        Some(cpu) => budget::plan(cpu, cores, slots),
        None => budget::Plan { workers: slots, duty: 1.0 },
    };
    let cache = match &cfg.cache_dir {
        Some(dir) => Some(DiskCache::open(dir.clone(), cfg.disk_cache).with_context(|| format!("opening the cache {}", dir.display()))?),
        None => None,
    };
    let http = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build().context("setting up HTTP")?;
    let (events, mut inbox) = mpsc::unbounded_channel();
    let to_loop = events.clone();
    let executors = Executors::new(Arc::new(move |e| {
        let _ = to_loop.send(Event::Executor(e));
    }));
    let core_cfg = core::Config {
        coordinator: endpoints.socket.clone(),
        agent: format!("idlecore-native/{} ({} {})", env!("CARGO_PKG_VERSION"), std::env::consts::OS, std::env::consts::ARCH),
        plan,
        cores,
        prefetch: None,
        module_budget: cfg.module_memory,
        input_budget: cfg.input_memory,
        peers: false,
        paused: false,
        seed: seed(),
    };
    let origin = Instant::now();
    let mut worker = Worker {
        core: Core::new(core_cfg, 0),
        origin,
        endpoints,
        events,
        socket: None,
        executors,
        loader: Loader::new(http, cache),
        state: "",
        fatal: None,
    };
    tracing::info!(coordinator = %worker.endpoints.socket, executors = plan.workers, duty = plan.duty, "worker starting");
    tokio::pin!(shutdown);
    let mut stopping: Option<Instant> = None;
    loop {
        worker.carry_out();
        if let Some(why) = worker.fatal.take() {
            worker.executors.retire_all();
            bail!(why);
        }
        if let Some(since) = stopping {
            let settled = worker.core.unacknowledged() == 0;
            if settled || since.elapsed() >= STOP_WAIT {
                let left = worker.core.unacknowledged();
                tracing::info!(unacknowledged = left, "worker stopped");
                break;
            }
        }
        let wake = worker.core.poll_timeout().map(|at| origin + Duration::from_millis(at));
        let stop_check = stopping.map(|s| s + STOP_WAIT);
        let until = [wake, stop_check].into_iter().flatten().min();
        tokio::select! {
            event = inbox.recv() => match event {
                Some(event) => worker.handle(event),
                None => break,
            },
            () = sleep_until(until) => {
                let now = worker.now();
                worker.core.handle_timeout(now);
            }
            () = &mut shutdown, if stopping.is_none() => {
                tracing::info!("stopping: giving back the leases held");
                stopping = Some(Instant::now());
                let now = worker.now();
                worker.core.handle(Input::Pause, now);
            }
        }
    }
    worker.executors.retire_all();
    worker.socket = None;
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

impl Worker {
    fn now(&self) -> Millis {
        self.origin.elapsed().as_millis() as Millis
    }

    fn handle(&mut self, event: Event) {
        let now = self.now();
        let input = match event {
            Event::Opened(conn) => Input::Opened { conn },
            Event::Frame(conn, frame) => Input::Frame { conn, frame },
            Event::Closed(conn, why) => {
                if self.socket.as_ref().is_some_and(|(c, _)| *c == conn) {
                    tracing::warn!(%why, "connection to the coordinator lost");
                    self.socket = None;
                }
                Input::Closed { conn, why }
            }
            Event::Executor(executors::Event::Ready { id }) => Input::ExecutorReady { id },
            Event::Executor(executors::Event::Done { id, frame, ran_ms }) => Input::RunEnded { id, frame, ran_ms },
            Event::Executor(executors::Event::Failed { id, why }) => Input::ExecutorFailed { id, why },
            Event::Loaded(hash, kind, result) => Input::Loaded { hash, kind, result },
        };
        self.core.handle(input, now);
    }

    /// Does what the core decided.
    fn carry_out(&mut self) {
        while let Some(out) = self.core.poll_output() {
            let now = self.now();
            match out {
                Output::Connect { conn } => self.connect(conn),
                Output::Send(frame) => {
                    if let Some((_, socket)) = &self.socket {
                        let _ = socket.send(frame);
                    }
                }
                Output::Spawn { slot, id } => {
                    if let Err(e) = self.executors.spawn(slot, id) {
                        self.core.handle(Input::SpawnFailed { id, why: e.to_string() }, now);
                    }
                }
                Output::Retire { slot } => self.executors.retire(slot),
                Output::Run { slot, lease, module, inputs } => {
                    if let Err(why) = self.executors.run(slot, lease, module, inputs) {
                        tracing::warn!(slot, %why, "an executor could not take a run");
                    }
                }
                Output::Load { hash, kind, limit, blob_path, .. } => {
                    let url = format!("{}{blob_path}{hash}", self.endpoints.http);
                    let (loader, events) = (self.loader.clone(), self.events.clone());
                    tokio::spawn(async move {
                        let result = loader.load(url, hash, kind, limit).await;
                        let _ = events.send(Event::Loaded(hash, kind, result));
                    });
                }
                // Peer transfers are the browser's; this worker fetches over HTTP.
                Output::Signal(_) | Output::Sources(_) | Output::Inactive => {}
                Output::SessionEnded => self.socket = None,
                Output::Task(t) => tracing::debug!(?t, "task"),
                Output::Status { .. } => self.log_state(),
                Output::Fatal(why) => self.fatal = Some(why),
            }
        }
    }

    fn log_state(&mut self) {
        let status = self.core.status();
        if status.state != self.state {
            self.state = status.state;
            match &status.last_error {
                Some(e) if status.state == "disconnected" => tracing::info!(state = status.state, last_error = %e, "worker"),
                _ => tracing::info!(state = status.state, "worker"),
            }
        }
    }

    /// Opens connection `conn`; its events come back tagged with it.
    fn connect(&mut self, conn: u32) {
        let (frames, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
        self.socket = Some((conn, frames));
        let (url, events) = (self.endpoints.socket.clone(), self.events.clone());
        tokio::spawn(async move {
            let limit = idlecore_protocol::MAX_FRAME_BYTES + 64 * 1024;
            let config = WebSocketConfig::default().max_message_size(Some(limit)).max_frame_size(Some(limit));
            let opened =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true));
            let socket = match opened.await {
                Ok(Ok((socket, _))) => socket,
                Ok(Err(e)) => return drop(events.send(Event::Closed(conn, format!("connecting to {url}: {e}")))),
                Err(_) => return drop(events.send(Event::Closed(conn, format!("connecting to {url}: no answer in {CONNECT_TIMEOUT:?}")))),
            };
            let _ = events.send(Event::Opened(conn));
            let (mut sink, mut stream) = socket.split();
            let why = loop {
                tokio::select! {
                    frame = outgoing.recv() => match frame {
                        Some(frame) => if let Err(e) = sink.send(Message::Binary(frame.into())).await {
                            break format!("sending: {e}");
                        },
                        None => {
                            let _ = sink.close().await;
                            break "closed by the worker".to_string();
                        }
                    },
                    message = stream.next() => match message {
                        Some(Ok(Message::Binary(frame))) => {
                            let _ = events.send(Event::Frame(conn, frame.to_vec()));
                        }
                        Some(Ok(Message::Close(close))) => {
                            break match close {
                                Some(c) => format!("closed by the coordinator (code {}: {})", u16::from(c.code), c.reason),
                                None => "closed by the coordinator".to_string(),
                            };
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break format!("receiving: {e}"),
                        None => break "the connection ended".to_string(),
                    },
                }
            };
            let _ = events.send(Event::Closed(conn, why));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinator_url_gives_the_worker_endpoint_and_the_blob_base() {
        let e = endpoints("https://idle.example.org", Some("news")).unwrap();
        assert_eq!(e, Endpoints { socket: "wss://idle.example.org/ws?site=news".into(), http: "https://idle.example.org".into() });
        let e = endpoints("http://127.0.0.1:8080/", None).unwrap();
        assert_eq!(e, Endpoints { socket: "ws://127.0.0.1:8080/ws".into(), http: "http://127.0.0.1:8080".into() });
        let e = endpoints("ws://127.0.0.1:9/ws", None).unwrap();
        assert_eq!(e.socket, "ws://127.0.0.1:9/ws");
        assert!(endpoints("ftp://x", None).is_err());
        assert!(endpoints("not a url", None).is_err());
    }
}
