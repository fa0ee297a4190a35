//! One task per worker connection (a WebSocket, or a WebRTC data channel with
//! the `webrtc` feature): handshake, then leases out and reports in.

use super::client::Visitor;
use super::upgrade::{FrameBudget, Message, WebSocket};
use super::Edge;
use crate::domain::{LeaseId, WorkerId};
use crate::services::outbox::{outbox, Inbox, Outbox};
use crate::services::{blobs, jobs, Services};
use futures_util::{SinkExt, StreamExt};
use idlecore_protocol::{
    decode_worker, encode_coordinator, hello_version, CoordinatorMessage, DecodeError, ErrorCode, ProtocolError, Welcome, WorkerMessage,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Why a session ended early; sent to the worker as an `Error` before closing.
struct Refusal(ErrorCode, String);

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        let code = match e {
            DecodeError::TooLarge(_) => ErrorCode::TooLarge,
            _ => ErrorCode::Malformed,
        };
        Refusal(code, e.to_string())
    }
}

/// A worker's connection, carrying whole protocol frames. One per session,
/// living in its task: the variants' sizes differ, but there is never more
/// than one of either, so boxing the larger would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Link {
    /// With the budget its unfinished frames are charged to (see `upgrade`).
    WebSocket(WebSocket, Arc<FrameBudget>),
    #[cfg(feature = "webrtc")]
    DataChannel(crate::net::rtc::ChannelLink),
}

impl Link {
    /// Waits for the next frame; `None` when the connection is closed.
    async fn recv(&mut self) -> Result<Option<Vec<u8>>, Refusal> {
        let (socket, budget) = match self {
            Link::WebSocket(socket, budget) => (socket, budget),
            #[cfg(feature = "webrtc")]
            Link::DataChannel(channel) => return Ok(channel.recv().await),
        };
        loop {
            let msg = socket.next().await;
            budget.message_done();
            match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Binary(b))) => return Ok(Some(b.to_vec())),
                Some(Ok(Message::Text(_))) => {
                    return Err(Refusal(ErrorCode::Malformed, "text frames are not part of the protocol; send binary frames".into()))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            }
        }
    }

    async fn send(&mut self, frame: Vec<u8>) -> Result<(), Refusal> {
        self.feed(frame).await?;
        self.flush().await
    }

    /// Queues a frame without writing it to the socket yet (see `flush`).
    async fn feed(&mut self, frame: Vec<u8>) -> Result<(), Refusal> {
        match self {
            Link::WebSocket(socket, _) => socket.feed(Message::Binary(frame.into())).await.map_err(|e| send_failed(e.to_string())),
            #[cfg(feature = "webrtc")]
            Link::DataChannel(channel) => channel.send(frame).map_err(|e| send_failed(e.to_string())),
        }
    }

    /// Writes what `feed` queued: several frames, one write.
    async fn flush(&mut self) -> Result<(), Refusal> {
        match self {
            Link::WebSocket(socket, _) => socket.flush().await.map_err(|e| send_failed(e.to_string())),
            #[cfg(feature = "webrtc")]
            Link::DataChannel(_) => Ok(()),
        }
    }

    /// Ends the connection politely (a data channel ends when the link is dropped).
    #[cfg_attr(not(feature = "webrtc"), allow(irrefutable_let_patterns))]
    async fn close(&mut self) {
        if let Link::WebSocket(socket, _) = self {
            let _ = socket.send(Message::Close(None)).await;
        }
    }

    /// The worker was sent a lease: a frame as large as a result may come.
    #[cfg_attr(not(feature = "webrtc"), allow(irrefutable_let_patterns))]
    fn may_send_results(&self) {
        if let Link::WebSocket(_, budget) = self {
            budget.allow_results();
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            Link::WebSocket(..) => Transport::WebSocket,
            #[cfg(feature = "webrtc")]
            Link::DataChannel(_) => Transport::DataChannel,
        }
    }
}

fn send_failed(e: String) -> Refusal {
    Refusal(ErrorCode::Malformed, format!("send failed: {e}"))
}

/// How a worker reached the coordinator (counted in `/api/stats` → `transports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    DataChannel,
}

/// Serves one worker connection from `visitor`.
pub async fn run(mut link: Link, edge: Arc<Edge>, visitor: Visitor) {
    let _open = edge.open_session(link.transport());
    let session = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let result = serve(&mut link, &edge, session, visitor).await;
    if let Err(Refusal(code, message)) = result {
        tracing::info!(session, ?code, "closing worker session: {message}");
        let frame = encode_coordinator(&CoordinatorMessage::Error(ProtocolError { code, message }));
        let _ = link.send(frame).await;
    }
    link.close().await;
}

async fn serve(link: &mut Link, edge: &Arc<Edge>, session: u64, visitor: Visitor) -> Result<(), Refusal> {
    let hello = match tokio::time::timeout(Duration::from_secs(10), link.recv()).await {
        Err(_) => return Err(Refusal(ErrorCode::UnexpectedMessage, "no Hello within 10 s".into())),
        Ok(frame) => match frame? {
            None => return Ok(()),
            Some(f) => match decode_worker(&f) {
                Ok(msg) => msg,
                // Another version's `Hello` may not decode: say why it does not.
                Err(e @ (DecodeError::Malformed(_) | DecodeError::Trailing(_))) => match hello_version(&f) {
                    Some(v) if v != PROTOCOL_VERSION => return Err(unsupported(v)),
                    _ => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            },
        },
    };
    let WorkerMessage::Hello(hello) = hello else {
        return Err(Refusal(ErrorCode::UnexpectedMessage, "the first message must be Hello".into()));
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(unsupported(hello.version));
    }
    let heartbeat_ms = edge.config.heartbeat_ms;
    let (tx, mut rx) = outbox();
    let services = &edge.services;
    let (worker, resume) = services.join(hello.slots, visitor.origin, hello.resume, tx);
    let welcome = CoordinatorMessage::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        session,
        heartbeat_ms,
        blob_path: "/blobs/".into(),
        max_frame: MAX_FRAME_BYTES as u32,
        ice_servers: edge.config.ice_servers.clone(),
        resume,
    });
    let (transport, site) = (link.transport(), &visitor.site);
    // `agent` is the worker's own text: logged escaped (`?`), never raw.
    tracing::info!(session, worker, slots = hello.slots, site, ?transport, agent = ?hello.agent, resumed = hello.resume.is_some(), "worker joined");
    let outcome = match send(link, &welcome).await {
        Ok(()) => session_loop(link, edge, worker, &mut rx, heartbeat_ms).await,
        Err(e) => Err(e),
    };
    let requeued = services.leave(worker, &rx);
    tracing::info!(session, worker, requeued, "worker left");
    outcome
}

fn unsupported(version: u32) -> Refusal {
    Refusal(
        ErrorCode::UnsupportedVersion,
        format!("protocol version {version} is not supported; this coordinator speaks {PROTOCOL_VERSION}"),
    )
}

async fn send(link: &mut Link, msg: &CoordinatorMessage) -> Result<(), Refusal> {
    link.send(encode_coordinator(msg)).await
}

/// Past this many bytes of answers waiting to be written, the session stops
/// reading the worker's frames until they are written: a worker that sends
/// and never reads cannot make the coordinator queue answers without bound.
const READ_PAUSE_BYTES: usize = 1 << 20;

async fn session_loop(link: &mut Link, edge: &Arc<Edge>, worker: WorkerId, rx: &mut Inbox, heartbeat_ms: u32) -> Result<(), Refusal> {
    // A worker silent for three heartbeat periods is gone. One timer per
    // session: a frame only notes the time, and the timer moves when it fires.
    let silence = Duration::from_millis(heartbeat_ms as u64 * 3);
    let mut heard = Instant::now();
    let deadline = tokio::time::sleep(silence);
    tokio::pin!(deadline);
    let (reply_tx, mut reply_rx) = outbox();
    let mut shutdown = edge.shutdown.clone();
    loop {
        let backlogged = rx.queued_bytes() + reply_rx.queued_bytes() > READ_PAUSE_BYTES;
        tokio::select! {
            // Frames first: after a long turn elsewhere (a slow flush), a
            // heartbeat waiting in the socket counts before the deadline does.
            biased;
            frame = link.recv(), if !backlogged => {
                let Some(frame) = frame? else { return Ok(()) };
                heard = Instant::now();
                handle(&edge.services, worker, decode_worker(&frame)?, &reply_tx)?;
            }
            () = &mut deadline => {
                if backlogged {
                    // Not reading: the worker's silence is ours.
                    heard = Instant::now();
                }
                let due = heard + silence;
                if due <= Instant::now() {
                    return Err(Refusal(ErrorCode::UnexpectedMessage, "no message for three heartbeat periods".into()));
                }
                deadline.as_mut().reset(due);
            }
            msg = rx.recv() => {
                // Every sender gone: the worker resumed in a newer session.
                let Some(msg) = msg else {
                    return Err(Refusal(ErrorCode::UnexpectedMessage, "the worker went on in a newer session".into()));
                };
                // A finished task's next lease is queued before its `Ack`:
                // acks waiting go first, as the worker expects them.
                // Boxed: the write's state exists only while it runs, not in
                // every idle session's task (see `within`).
                Box::pin(within(silence, async {
                    feed_replies(link, &mut reply_rx).await?;
                    feed_batched(link, msg, rx).await?;
                    feed_ready(link, rx, &mut reply_rx).await
                }))
                .await?;
            }
            Some(msg) = reply_rx.recv() => {
                Box::pin(within(silence, async {
                    link.feed(encode_coordinator(&msg)).await?;
                    feed_ready(link, rx, &mut reply_rx).await
                }))
                .await?;
            }
            _ = shutdown.changed() => {
                return Err(Refusal(ErrorCode::ShuttingDown, "the coordinator is shutting down; reconnect later".into()));
            }
        }
    }
}

/// Writes to the worker must finish within `limit`: one that stops reading
/// its socket holds the session no longer than a silent one. (The write
/// with its timer is larger than everything else an idle session holds: the
/// callers box it, so an idle session's task does not carry its state.)
async fn within(limit: Duration, write: impl std::future::Future<Output = Result<(), Refusal>>) -> Result<(), Refusal> {
    tokio::time::timeout(limit, write).await.unwrap_or_else(|_| {
        Err(Refusal(ErrorCode::UnexpectedMessage, "the worker did not read its messages for three heartbeat periods".into()))
    })
}

/// Largest lease batch, in encoded bytes (far below the frame limit); a
/// lease that would take a batch past it travels on its own.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Encoded size of a lease as a frame of its own.
fn encoded_size(lease: idlecore_protocol::Lease) -> (idlecore_protocol::Lease, usize) {
    let msg = CoordinatorMessage::Lease(lease);
    let size = encode_coordinator(&msg).len();
    let CoordinatorMessage::Lease(lease) = msg else { unreachable!("built above") };
    (lease, size)
}

/// Most messages of each queue written together.
const MAX_FED: usize = 64;

/// Queues whatever else is ready to go (acks, then leases and other
/// messages), then writes it all at once: an `Ack` and the next lease
/// usually leave together.
async fn feed_ready(link: &mut Link, rx: &mut Inbox, reply_rx: &mut Inbox) -> Result<(), Refusal> {
    feed_replies(link, reply_rx).await?;
    for _ in 0..MAX_FED {
        let Ok(msg) = rx.try_recv() else { break };
        feed_batched(link, msg, rx).await?;
    }
    link.flush().await
}

/// Queues the replies (acks, sources) waiting. Bounded, like `feed_ready`,
/// so a flood of outgoing messages never stops the session reading.
async fn feed_replies(link: &mut Link, reply_rx: &mut Inbox) -> Result<(), Refusal> {
    for _ in 0..MAX_FED {
        let Ok(msg) = reply_rx.try_recv() else { break };
        link.feed(encode_coordinator(&msg)).await?;
    }
    Ok(())
}

/// Queues `first` and whatever else is already queued, with leases that are
/// ready together in one `Leases` frame (in order; other messages after them).
async fn feed_batched(link: &mut Link, first: CoordinatorMessage, rx: &mut Inbox) -> Result<(), Refusal> {
    let CoordinatorMessage::Lease(lease) = first else {
        return link.feed(encode_coordinator(&first)).await;
    };
    link.may_send_results();
    let (lease, mut bytes) = encoded_size(lease);
    let mut batch = vec![lease];
    let mut after = None;
    while batch.len() < idlecore_protocol::limits::MAX_SLOTS as usize {
        match rx.try_recv() {
            Ok(CoordinatorMessage::Lease(l)) => {
                let (l, size) = encoded_size(l);
                if bytes + size > MAX_BATCH_BYTES {
                    after = Some(CoordinatorMessage::Lease(l));
                    break;
                }
                bytes += size;
                batch.push(l);
            }
            Ok(other) => {
                after = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    let msg = if batch.len() == 1 { CoordinatorMessage::Lease(batch.pop().expect("one lease")) } else { CoordinatorMessage::Leases(batch) };
    link.feed(encode_coordinator(&msg)).await?;
    match after {
        Some(m) => link.feed(encode_coordinator(&m)).await,
        None => Ok(()),
    }
}

/// Handles one report. Stores run in their own tasks so the session keeps
/// reading while a group commit is in progress; their acks come back through `reply`.
fn handle(services: &Arc<Services>, worker: WorkerId, msg: WorkerMessage, reply: &Outbox) -> Result<(), Refusal> {
    match msg {
        WorkerMessage::Hello(_) => {
            return Err(Refusal(ErrorCode::UnexpectedMessage, "Hello was already received".into()));
        }
        WorkerMessage::Heartbeat(h) => services.schedule(|s, now| s.heartbeat(worker, &h.leases, now)),
        WorkerMessage::Capacity(c) => services.schedule(|s, now| s.set_capacity(worker, c.slots, now)),
        WorkerMessage::Signal(signal) => services.peers(|p, now| p.relay(worker, signal, now)),
        WorkerMessage::Want(w) => {
            let sources = services.peers(|p, _| p.want(worker, w.blob));
            reply.send(CoordinatorMessage::Sources(sources));
        }
        WorkerMessage::Have(h) => {
            let fetched = services.peers(|p, _| {
                p.have(worker, &h.blobs);
                if h.from_peers {
                    p.fetched_from_peers(worker, &h.blobs)
                } else {
                    vec![]
                }
            });
            if !fetched.is_empty() {
                let services = services.clone();
                tokio::spawn(async move { blobs::count_peer_bytes(&services, fetched).await });
            }
        }
        // Claims happen here, in arrival order; only the durable writes run apart.
        WorkerMessage::Result(r) => {
            let (s, lease) = (services.clone(), r.lease);
            match jobs::claim(services, worker, lease) {
                Some(f) => ack_when_stored(reply, lease, async move { jobs::record_result(&s, f, r).await }),
                None => ack(reply, lease),
            }
        }
        // A free failure of a lease this session does not hold (an attempt from
        // before a reconnect, already re-queued) tells nothing: taking it over
        // would cancel the task's live attempt elsewhere.
        WorkerMessage::Failure(failure)
            if !crate::domain::scheduler::counts_against_task(failure.kind)
                && !services.schedule(|s, _| s.holds(worker, failure.lease)) =>
        {
            ack(reply, failure.lease)
        }
        WorkerMessage::Failure(failure) => {
            let (s, lease) = (services.clone(), failure.lease);
            match jobs::claim(services, worker, lease) {
                Some(f) => ack_when_stored(reply, lease, async move { jobs::record_failure(&s, f, failure).await }),
                None => ack(reply, lease),
            }
        }
    }
    Ok(())
}

/// Runs a report's store in its own task; acknowledges the lease once stored.
fn ack_when_stored(
    reply: &Outbox,
    lease: LeaseId,
    store: impl std::future::Future<Output = Result<(), crate::store::StoreError>> + Send + 'static,
) {
    let reply = reply.clone();
    tokio::spawn(async move {
        match store.await {
            Ok(()) => ack(&reply, lease),
            Err(e) => tracing::error!(lease, error = %e, "report not stored; task requeued"),
        }
    });
}

fn ack(reply: &Outbox, lease: LeaseId) {
    reply.send(CoordinatorMessage::Ack(idlecore_protocol::Ack { lease }));
}
