//! Worker sessions over WebRTC data channels (cargo feature `webrtc`), for
//! browsers that cannot open a WebSocket to the coordinator.
//!
//! A browser POSTs an SDP offer to `/rtc`. The coordinator answers as an
//! ICE-lite peer whose one host candidate is the UDP address given with
//! `--rtc-listen`, and runs the session exactly as over a WebSocket
//! (`sessions::run`), each frame cut into pieces on the channel
//! (`idlecore_protocol::pieces`).
//!
//! One task, the hub, owns the UDP socket and every peer's `str0m::Rtc`: it
//! feeds datagrams and timeouts in, sends what comes out, and passes whole
//! frames between each peer's data channel and its session task. str0m is
//! sans-IO: after every change to an `Rtc` its output is drained before the
//! next change.

use super::client::Visitor;
use super::sessions::{self, Link};
use super::Edge;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use idlecore_protocol::pieces::{self, Joiner};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Bytes queued to a peer at most; a session that falls this far behind ends.
const MAX_QUEUED_BYTES: usize = 64 << 20;
/// SCTP bytes in flight to one peer (str0m's default, 128 KiB, limits throughput).
const MAX_IN_FLIGHT: usize = 4 << 20;
/// Whole frames, and their bytes, waiting for the session task; a peer that
/// outruns it ends.
const INBOUND_FRAMES: usize = 256;
const INBOUND_BYTES: usize = 64 << 20;
/// Peers whose data channel has not opened yet, at most: offers past it get
/// 503 (each costs a DTLS key and a session waiting for `Hello`).
const MAX_CONNECTING: usize = 256;
/// Of those, how many one client address may hold.
const MAX_CONNECTING_PER_ADDRESS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("the offer is not SDP: {0}")]
    BadOffer(String),
    #[error("the offer cannot be accepted: {0}")]
    Refused(String),
    #[error("the WebRTC hub has stopped")]
    Stopped,
    #[error("too many WebRTC connections are being set up; try again later")]
    Busy,
}

enum Command {
    Add { id: u64, rtc: Box<Rtc>, inbound: Inbound, client: Option<std::net::IpAddr>, added: oneshot::Sender<Result<(), RtcError>> },
    Send { id: u64, frame: Vec<u8> },
    Close { id: u64 },
}

/// The coordinator's WebRTC endpoint: a UDP socket and the hub task on it.
pub struct RtcHub {
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
}

/// The hub's side of a session's incoming frames: the channel and the bytes in it.
struct Inbound {
    frames: mpsc::Sender<Vec<u8>>,
    bytes: Arc<AtomicUsize>,
}

/// A session's side of its data channel: whole frames in and out. Dropping
/// it ends the peer connection.
pub struct ChannelLink {
    id: u64,
    inbound: mpsc::Receiver<Vec<u8>>,
    inbound_bytes: Arc<AtomicUsize>,
    commands: mpsc::UnboundedSender<Command>,
}

impl ChannelLink {
    /// The next frame; `None` once the channel or the connection is gone.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.inbound.recv().await?;
        self.inbound_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }

    pub fn send(&self, frame: Vec<u8>) -> Result<(), RtcError> {
        self.commands.send(Command::Send { id: self.id, frame }).map_err(|_| RtcError::Stopped)
    }
}

impl Drop for ChannelLink {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close { id: self.id });
    }
}

static NEXT_PEER: AtomicU64 = AtomicU64::new(1);

/// `POST /rtc?site=KEY` with an SDP offer: the SDP answer (`application/sdp`),
/// and a worker session on the data channel the browser opens. Any page may
/// ask (CORS), as any page may open the worker WebSocket.
pub(crate) async fn offer(State(edge): State<Arc<Edge>>, visitor: Visitor, body: String) -> Response {
    let cors = [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")];
    let Some(hub) = &edge.rtc else {
        let why = "this coordinator takes no WebRTC sessions (start it with --rtc-listen ADDR)";
        return (StatusCode::NOT_FOUND, cors, why).into_response();
    };
    match hub.accept(&body, visitor.addr).await {
        Ok((answer, link)) => {
            tokio::spawn(sessions::run(Link::DataChannel(link), edge.clone(), visitor));
            (cors, [(header::CONTENT_TYPE, "application/sdp")], answer).into_response()
        }
        Err(e @ (RtcError::Stopped | RtcError::Busy)) => (StatusCode::SERVICE_UNAVAILABLE, cors, e.to_string()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, cors, e.to_string()).into_response(),
    }
}

impl RtcHub {
    /// Binds `addr` (a concrete address browsers can reach: it is the host
    /// candidate; port 0 picks one) and starts the hub.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<RtcHub> {
        anyhow::ensure!(
            !addr.ip().is_unspecified(),
            "--rtc-listen {addr}: give the address browsers reach (it is the ICE candidate), not {}",
            addr.ip()
        );
        let socket = UdpSocket::bind(addr).await.map_err(|e| anyhow::anyhow!("binding UDP {addr}: {e}"))?;
        let addr = socket.local_addr()?;
        Candidate::host(addr, "udp").map_err(|e| anyhow::anyhow!("--rtc-listen {addr}: not usable as an ICE candidate: {e}"))?;
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(socket, addr, rx));
        Ok(RtcHub { addr, commands })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers a browser's offer. The peer is registered with the hub before
    /// the answer goes back (its first STUN checks must find it).
    pub async fn accept(&self, offer: &str, client: Option<std::net::IpAddr>) -> Result<(String, ChannelLink), RtcError> {
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| RtcError::BadOffer(e.to_string()))?;
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_sctp_max_buffered_amount(MAX_IN_FLIGHT)
            .set_sctp_max_message_size((pieces::PIECE_BYTES + 1) as u32)
            .build(Instant::now());
        let candidate = Candidate::host(self.addr, "udp").map_err(|e| RtcError::Refused(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| RtcError::Refused(e.to_string()))?;
        let id = NEXT_PEER.fetch_add(1, Ordering::Relaxed);
        let (frames, inbound) = mpsc::channel(INBOUND_FRAMES);
        let bytes = Arc::new(AtomicUsize::new(0));
        let (added, done) = oneshot::channel();
        let add = Command::Add { id, rtc: Box::new(rtc), inbound: Inbound { frames, bytes: bytes.clone() }, client, added };
        self.commands.send(add).map_err(|_| RtcError::Stopped)?;
        done.await.map_err(|_| RtcError::Stopped)??;
        Ok((answer.to_sdp_string(), ChannelLink { id, inbound, inbound_bytes: bytes, commands: self.commands.clone() }))
    }
}

struct Peer {
    rtc: Box<Rtc>,
    /// The address its offer came from, and the UDP sources its packets came from.
    client: Option<std::net::IpAddr>,
    sources: Vec<SocketAddr>,
    channel: Option<ChannelId>,
    joiner: Joiner,
    inbound: Inbound,
    out: VecDeque<Vec<u8>>,
    out_bytes: usize,
    /// Pieces wait for the channel to open or to drain.
    flush: bool,
    /// When the `Rtc` wants an `Input::Timeout`.
    wake: Instant,
    /// Set when the session ended: what it queued (its last `Error`) goes
    /// out first, then the connection closes, by this deadline at the latest.
    closing: Option<Instant>,
    shutting: bool,
}

type Ended = String;

impl Peer {
    /// Drains the `Rtc`'s output (sending datagrams, handling events) and
    /// writes queued pieces while the channel takes them; returns when it
    /// wants to be woken.
    fn pump(&mut self, socket: &UdpSocket) -> Result<Instant, Ended> {
        loop {
            let deadline = self.drain(socket)?;
            let (Some(id), true) = (self.channel, self.flush) else { return Ok(deadline) };
            let Some(piece) = self.out.front() else {
                self.flush = false;
                return Ok(deadline);
            };
            let mut channel = self.rtc.channel(id).ok_or("the data channel is gone")?;
            match channel.write(true, piece) {
                Ok(true) => {
                    self.out_bytes -= piece.len();
                    self.out.pop_front();
                }
                // Full: `ChannelBufferedAmountLow` sets `flush` again.
                Ok(false) => self.flush = false,
                Err(e) => return Err(format!("writing to the data channel: {e}")),
            }
        }
    }

    fn drain(&mut self, socket: &UdpSocket) -> Result<Instant, Ended> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(at) => return Ok(at),
                // UDP may drop; so may this (a full send buffer): both are retransmitted.
                Output::Transmit(t) => drop(socket.try_send_to(&t.contents, t.destination)),
                Output::Event(e) => self.on_event(e)?,
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), Ended> {
        match event {
            Event::ChannelOpen(id, _) if self.channel.is_none() => {
                self.channel = Some(id);
                if let Some(mut c) = self.rtc.channel(id) {
                    c.set_buffered_amount_low_threshold(MAX_IN_FLIGHT / 4);
                }
                self.flush = true;
            }
            Event::ChannelOpen(..) => return Err("a second data channel".into()),
            Event::ChannelData(d) => {
                if let Some(frame) = self.joiner.push(&d.data).map_err(|e| e.to_string())? {
                    let bytes = self.inbound.bytes.fetch_add(frame.len(), Ordering::Relaxed) + frame.len();
                    if bytes > INBOUND_BYTES || self.inbound.frames.try_send(frame).is_err() {
                        return Err("the worker sends faster than its session reads".into());
                    }
                }
            }
            Event::ChannelBufferedAmountLow(_) => self.flush = true,
            Event::ChannelClose(_) => return Err("the data channel closed".into()),
            Event::Closed => return Err("the peer closed the connection".into()),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => return Err("ICE disconnected".into()),
            _ => {}
        }
        Ok(())
    }

    /// Bytes written to the channel and not yet acknowledged.
    fn unacknowledged(&mut self) -> usize {
        self.channel.and_then(|id| self.rtc.channel(id)).map_or(0, |mut c| c.buffered_amount())
    }

    fn queue(&mut self, frame: &[u8]) -> Result<(), Ended> {
        for piece in pieces::split(frame) {
            self.out_bytes += piece.len();
            self.out.push_back(piece);
        }
        self.flush = true;
        if self.out_bytes > MAX_QUEUED_BYTES {
            return Err(format!("more than {} MiB queued to a slow worker", MAX_QUEUED_BYTES >> 20));
        }
        Ok(())
    }
}

/// The hub: one loop over the socket, the sessions' commands and the peers' timers.
async fn run(socket: UdpSocket, addr: SocketAddr, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut peers: HashMap<u64, Peer> = HashMap::new();
    // Which peer a UDP source's packets are for, once one took them: a
    // datagram is matched by a lookup, not by asking every peer.
    let mut by_source: HashMap<SocketAddr, u64> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    // Peers changed since their output was last drained.
    let mut touched: Vec<u64> = Vec::new();
    loop {
        for id in std::mem::take(&mut touched) {
            let Some(p) = peers.get_mut(&id) else { continue };
            match p.pump(&socket) {
                Ok(at) if p.rtc.is_alive() => {
                    p.wake = at;
                    let sent = p.out.is_empty() && p.unacknowledged() == 0;
                    match p.closing {
                        Some(by) if by <= Instant::now() => end(&mut peers, &mut by_source, id, "the session ended"),
                        // Graceful once everything queued is sent and acknowledged: SCTP
                        // shutdown and DTLS close_notify, drained on later turns.
                        Some(by) if sent && !p.shutting => {
                            p.shutting = true;
                            let _ = p.rtc.close();
                            match p.drain(&socket) {
                                Ok(at) => p.wake = at.min(by),
                                Err(why) => end(&mut peers, &mut by_source, id, &why),
                            }
                        }
                        Some(by) => p.wake = p.wake.min(by),
                        _ => {}
                    }
                }
                Ok(_) => end(&mut peers, &mut by_source, id, "the connection is closed"),
                Err(why) => end(&mut peers, &mut by_source, id, &why),
            }
        }
        let wake = peers.values().map(|p| p.wake).min().unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                // Not STUN, DTLS, RTP or RTCP: nothing of ours.
                let Ok(packet) = Receive::new(Protocol::Udp, source, addr, &buf[..n]) else { continue };
                let input = Input::Receive(Instant::now(), packet);
                let known = by_source.get(&source).copied().filter(|id| peers.get(id).is_some_and(|p| p.rtc.accepts(&input)));
                let id = known.or_else(|| peers.iter().find(|(_, p)| p.rtc.accepts(&input)).map(|(id, _)| *id));
                if let Some(p) = id.and_then(|id| peers.get_mut(&id)) {
                    let id = id.expect("found above");
                    if known.is_none() && p.sources.len() < 8 {
                        p.sources.push(source);
                        by_source.insert(source, id);
                    }
                    if let Err(e) = p.rtc.handle_input(input) {
                        tracing::debug!(peer = id, "WebRTC input refused: {e}");
                    }
                    touched.push(id);
                }
            }
            command = commands.recv() => match command {
                None => return,
                Some(Command::Add { id, rtc, inbound, client, added }) => {
                    let connecting = || peers.values().filter(|p| p.channel.is_none());
                    let from_client = connecting().filter(|p| client.is_some() && p.client == client).count();
                    if connecting().count() >= MAX_CONNECTING || from_client >= MAX_CONNECTING_PER_ADDRESS {
                        let _ = added.send(Err(RtcError::Busy));
                        continue;
                    }
                    let joiner = Joiner::new(idlecore_protocol::MAX_FRAME_BYTES + 64 * 1024);
                    let peer = Peer { rtc, client, sources: Vec::new(), channel: None, joiner, inbound, out: VecDeque::new(), out_bytes: 0, flush: false, wake: Instant::now(), closing: None, shutting: false };
                    // The offer's request was dropped meanwhile: no session will come for it.
                    if added.send(Ok(())).is_ok() {
                        peers.insert(id, peer);
                        touched.push(id);
                    }
                }
                Some(Command::Send { id, frame }) => {
                    let Some(p) = peers.get_mut(&id) else { continue };
                    match p.queue(&frame) {
                        Ok(()) => touched.push(id),
                        Err(why) => end(&mut peers, &mut by_source, id, &why),
                    }
                }
                Some(Command::Close { id }) => {
                    let Some(p) = peers.get_mut(&id) else { continue };
                    p.closing.get_or_insert(Instant::now() + Duration::from_secs(5));
                    touched.push(id);
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                for (&id, p) in peers.iter_mut().filter(|(_, p)| p.wake <= now) {
                    if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                        tracing::debug!(peer = id, "WebRTC timeout handling failed: {e}");
                    }
                    touched.push(id);
                }
            }
        }
    }
}

/// Forgets a peer. Its inbound sender goes with it, so its session sees the channel end.
fn end(peers: &mut HashMap<u64, Peer>, by_source: &mut HashMap<SocketAddr, u64>, id: u64, why: &str) {
    if let Some(mut p) = peers.remove(&id) {
        for source in &p.sources {
            by_source.remove(source);
        }
        tracing::info!(peer = id, "WebRTC worker connection ended: {why}");
        p.rtc.disconnect();
    }
}
