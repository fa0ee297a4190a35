//! The agent Worker: the browser's host for the agent core
//! (`idlecore_agent_core`, which holds the session, leases, executors'
//! states and blobs in memory). Every input (socket, executor Workers, blob
//! loads, peers, the page, the core's timer) becomes an [`Event`] handled one
//! at a time; the core's output is then carried out here: sockets
//! (`transport`), executor Workers (`executors`), blobs from the Cache API,
//! peers or HTTP (`blobs`, `peers`), and posts to the page (`page`).

pub mod blobs;
pub mod executors;
pub mod peers;

use crate::page::{self, AgentOptions, Control, PageMessage};
use crate::transport::{DataChannelSocket, Socket, SocketEvent, WebSocketConn};
use executors::{ExecutorEvent, Executors};
use futures_channel::mpsc;
use futures_util::StreamExt;
use gloo_timers::callback::Timeout;
use idlecore_agent_core::{self as core, Input, Kind, Millis, Output};
use idlecore_protocol::{Sha256Hash, WorkerMessage};
use js_sys::{Function, Uint8Array, WebAssembly};
use std::rc::Rc;
use wasm_bindgen::JsValue;

/// Status posts to the page are at most one per this (state changes go at
/// once), so a stream of short tasks does not keep the page's thread busy.
const STATUS_INTERVAL_MS: u32 = 250;

pub enum Event {
    /// Tagged with the connection's number, so events of an old one are ignored.
    Socket(u32, SocketEvent),
    /// From executor Worker `id`.
    Executor(u32, ExecutorEvent),
    /// A module or input is loaded (or could not be).
    Loaded(Sha256Hash, Kind, Result<blobs::Loaded, blobs::BlobError>),
    /// Peer transfers: signals, data channels, timers (see `peers`).
    Peer(peers::PeerEvent),
    /// Something the core waits for is due.
    Wake,
    /// The pause between status posts is over.
    StatusTick,
    /// From the page: pause, resume, a new CPU share.
    Control(Control),
}

type Core = core::Agent<WebAssembly::Module, Uint8Array>;

pub struct Agent {
    opts: AgentOptions,
    notify: Rc<dyn Fn(Event)>,
    core: Core,
    /// The current connection, with its number.
    socket: Option<(u32, Socket)>,
    executors: Executors,
    /// The core's next timeout, and the timer set for it.
    wake: Option<(Millis, Timeout)>,
    peers: peers::Peers,
    /// Set while status posts pause; `status_dirty` if one is owed when it ends.
    status_timer: Option<Timeout>,
    status_dirty: bool,
}

/// Milliseconds on this Worker's clock.
fn now() -> Millis {
    crate::executor::now_ms() as Millis
}

/// Runs an agent until its Worker is terminated.
pub async fn run(opts: AgentOptions, spawn_executor: Function) -> Result<(), JsValue> {
    let (tx, mut rx) = mpsc::unbounded::<Event>();
    let notify: Rc<dyn Fn(Event)> = Rc::new(move |e| {
        let _ = tx.unbounded_send(e);
    });
    let to_executors = notify.clone();
    let executors = Executors::new(spawn_executor, Rc::new(move |id, e| to_executors(Event::Executor(id, e))));
    let from_page = notify.clone();
    let _listener = page::messages::listen(move |m| match m {
        PageMessage::Control(c) => from_page(Event::Control(c)),
        PageMessage::Rtc(r) => from_page(Event::Peer(peers::PeerEvent::Page(r))),
        PageMessage::Channel(peer, channel) => from_page(Event::Peer(peers::PeerEvent::Channel(peer, channel))),
    });
    let seed = (js_sys::Math::random() * (1u64 << 53) as f64) as u64;
    let core = Core::new(opts.core_config(seed), now());
    let mut agent = Agent {
        opts,
        notify,
        core,
        socket: None,
        executors,
        wake: None,
        peers: Default::default(),
        status_timer: None,
        status_dirty: false,
    };
    agent.carry_out();
    while let Some(event) = rx.next().await {
        agent.handle(event);
    }
    Ok(())
}

impl Agent {
    pub fn handle(&mut self, event: Event) {
        let now = now();
        match event {
            Event::Socket(conn, e) => {
                let input = match e {
                    SocketEvent::Open => Input::Opened { conn },
                    SocketEvent::Frame(frame) => Input::Frame { conn, frame },
                    SocketEvent::Closed { code, reason } => {
                        let why = format!("connection closed (code {code}{}{reason})", if reason.is_empty() { "" } else { ": " });
                        Input::Closed { conn, why }
                    }
                };
                self.core.handle(input, now);
            }
            Event::Executor(id, e) => {
                let input = match e {
                    ExecutorEvent::Ready => Input::ExecutorReady { id },
                    ExecutorEvent::Done(frame) => Input::RunEnded { id, frame, ran_ms: self.executors.ran_ms(id) },
                    ExecutorEvent::Crashed(why) => Input::ExecutorFailed { id, why },
                };
                self.core.handle(input, now);
            }
            Event::Loaded(hash, kind, result) => self.core.handle(Input::Loaded { hash, kind, result }, now),
            Event::Peer(e) => self.on_peer(e),
            Event::Wake => {
                self.wake = None;
                self.core.handle_timeout(now);
            }
            Event::StatusTick => {
                self.status_timer = None;
                if self.status_dirty {
                    self.post_status();
                }
            }
            Event::Control(c) => {
                let input = match c {
                    Control::Pause => Input::Pause,
                    Control::Resume => Input::Resume,
                    Control::Cpu { cpu } => {
                        self.opts.cpu = cpu;
                        Input::Plan(self.opts.plan())
                    }
                };
                self.core.handle(input, now);
            }
        }
        self.carry_out();
    }

    /// Does what the core decided, then sets the timer for its next timeout.
    fn carry_out(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Connect { conn } => self.connect(conn),
                Output::Send(frame) => self.send(&frame),
                Output::Spawn { slot, id } => {
                    if let Err(e) = self.executors.spawn(slot, id) {
                        self.core.handle(Input::SpawnFailed { id, why: text(&e) }, now());
                    }
                }
                Output::Retire { slot } => self.executors.retire(slot),
                Output::Run { slot, lease, module, inputs } => {
                    if let Err(e) = self.executors.run(slot, &module, lease, &inputs) {
                        if let Some(id) = self.executors.id(slot) {
                            self.core.handle(Input::ExecutorFailed { id, why: text(&e) }, now());
                        }
                    }
                }
                Output::Load { hash, kind, limit, blob_path, ask_peers } => self.load(hash, kind, limit, &blob_path, ask_peers),
                Output::Signal(s) => self.on_peer_signal(s),
                Output::Sources(s) => self.on_sources(s),
                Output::SessionEnded => {
                    self.socket = None;
                    self.end_peers();
                }
                Output::Inactive => self.stop_serving(),
                Output::Task(t) => page::report_task(&t),
                Output::Status { now: true } => self.post_status(),
                Output::Status { now: false } => self.publish_status(),
                Output::Fatal(message) => page::report_fatal(&message),
            }
        }
        self.schedule_wake();
    }

    fn schedule_wake(&mut self) {
        let next = self.core.poll_timeout();
        if self.wake.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        self.wake = next.map(|at| {
            let notify = self.notify.clone();
            let delay = at.saturating_sub(now()).min(u32::MAX as Millis) as u32;
            (at, Timeout::new(delay, move || notify(Event::Wake)))
        });
    }

    /// Opens connection `conn` (a WebSocket, or a data channel the page makes).
    fn connect(&mut self, conn: u32) {
        self.socket = None;
        let notify = self.notify.clone();
        let notify: Rc<dyn Fn(SocketEvent)> = Rc::new(move |e| notify(Event::Socket(conn, e)));
        let coordinator = &self.opts.coordinator;
        let socket = if self.opts.data_channel {
            DataChannelSocket::connect(coordinator, conn, notify).map(Socket::DataChannel)
        } else {
            WebSocketConn::connect(coordinator, notify).map(Socket::WebSocket)
        };
        match socket {
            Ok(socket) => self.socket = Some((conn, socket)),
            Err(e) => self.core.handle(Input::Closed { conn, why: format!("cannot connect to {coordinator}: {e:?}") }, now()),
        }
    }

    fn send(&mut self, frame: &[u8]) {
        let Some((conn, socket)) = &self.socket else { return };
        if socket.send(frame).is_err() {
            let conn = *conn;
            self.core.handle(Input::Closed { conn, why: "send failed".into() }, now());
        }
    }

    /// Posts the status, or owes it until the current pause between posts ends.
    fn publish_status(&mut self) {
        if self.status_timer.is_some() {
            self.status_dirty = true;
        } else {
            self.post_status();
        }
    }

    fn post_status(&mut self) {
        page::report_status(self.core.status());
        self.status_dirty = false;
        let notify = self.notify.clone();
        self.status_timer = Some(Timeout::new(STATUS_INTERVAL_MS, move || notify(Event::StatusTick)));
    }

    /// Sends a message on the session (the core counts it).
    fn send_msg(&mut self, msg: &WorkerMessage) {
        self.core.send(msg);
    }

    /// The session's blob path, once `Welcome` gave it.
    fn welcomed_path(&self) -> Option<String> {
        self.core.blob_path().map(str::to_string)
    }

    /// Where the coordinator serves a blob (its default path before `Welcome`).
    fn blob_url(&self, hash: &Sha256Hash) -> Result<String, String> {
        blobs::blob_url(&self.opts.coordinator, self.core.blob_path().unwrap_or("/blobs/"), hash)
    }

    /// Loads a blob from the persistent cache (modules), else from peers
    /// (when asked to), else from the coordinator.
    fn load(&mut self, hash: Sha256Hash, kind: Kind, limit: u64, blob_path: &str, ask_peers: bool) {
        let notify = self.notify.clone();
        match blobs::blob_url(&self.opts.coordinator, blob_path, &hash) {
            Ok(url) => wasm_bindgen_futures::spawn_local(async move {
                notify(match blobs::from_cache(&url, hash, kind).await {
                    Some(loaded) => Event::Loaded(hash, kind, loaded),
                    None if ask_peers => Event::Peer(peers::PeerEvent::Missing(hash, kind, limit)),
                    None => Event::Loaded(hash, kind, blobs::from_network(&url, hash, kind, limit).await),
                });
            }),
            Err(e) => notify(Event::Loaded(hash, kind, Err((kind.fetch_failure(), e)))),
        }
    }
}

/// A JS error's message.
fn text(e: &JsValue) -> String {
    use wasm_bindgen::JsCast;
    e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).or_else(|| e.as_string()).unwrap_or_else(|| format!("{e:?}"))
}
