//! The worker WebSocket: the upgrade handshake, and a budget for the frames
//! its worker has started but not finished sending.
//!
//! A frame is held whole before it is decoded, so a worker that starts a
//! 16 MiB frame and sends it slowly holds 16 MiB of the coordinator's
//! memory. The budget bounds that from the socket's side, where the bytes
//! arrive: a session may have at most `allowance` bytes of an unfinished
//! frame (small until the session has been sent a lease, since only a
//! result is ever large), and all sessions together at most
//! [`GLOBAL_BUDGET`] past the small allowance. A read past either ends the
//! connection, as a frame over the protocol's limit does.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use tokio_tungstenite::tungstenite::Message;
pub type WebSocket = tokio_tungstenite::WebSocketStream<Budgeted<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>>;

/// Unfinished frame bytes a session may hold before it has been sent a
/// lease: every message but a result fits (heartbeats of 4,096 ids are ~70 KiB).
pub const SMALL_ALLOWANCE: usize = 256 * 1024;
/// Unfinished frame bytes past `SMALL_ALLOWANCE` all sessions together may hold.
pub const GLOBAL_BUDGET: usize = 192 * 1024 * 1024;

/// Bytes of unfinished frames beyond the small allowance, over all sessions.
static OVER_SMALL: AtomicUsize = AtomicUsize::new(0);

/// One session's share: what it may hold and what it holds.
#[derive(Debug)]
pub struct FrameBudget {
    allowance: AtomicUsize,
    pending: AtomicUsize,
}

impl FrameBudget {
    fn new() -> Arc<FrameBudget> {
        Arc::new(FrameBudget { allowance: AtomicUsize::new(SMALL_ALLOWANCE), pending: AtomicUsize::new(0) })
    }

    /// The session was sent a lease: its result may be as large as a frame.
    pub fn allow_results(&self) {
        self.allowance.store(idlecore_protocol::MAX_FRAME_BYTES + 64 * 1024, Ordering::Relaxed);
    }

    /// A whole message arrived: nothing of a frame is held any more (but the
    /// few KiB of the next one read with it, which are not counted).
    pub fn message_done(&self) {
        let held = self.pending.swap(0, Ordering::Relaxed);
        OVER_SMALL.fetch_sub(held.saturating_sub(SMALL_ALLOWANCE), Ordering::Relaxed);
    }

    /// Counts `n` more bytes read; an error if they break the budget.
    fn read(&self, n: usize) -> io::Result<()> {
        let before = self.pending.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        let over = after.saturating_sub(SMALL_ALLOWANCE) - before.saturating_sub(SMALL_ALLOWANCE);
        let total = OVER_SMALL.fetch_add(over, Ordering::Relaxed) + over;
        if after > self.allowance.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a frame larger than this session may send yet"));
        }
        if over > 0 && total > GLOBAL_BUDGET {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "too many large frames in progress"));
        }
        Ok(())
    }
}

impl Drop for FrameBudget {
    fn drop(&mut self) {
        self.message_done();
    }
}

/// A socket whose reads are charged to a [`FrameBudget`].
pub struct Budgeted<S> {
    inner: S,
    budget: Arc<FrameBudget>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.budget.read(buf.filled().len() - before)?;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Bytes a worker socket reads at a time. Each read zeroes this much of the
/// read buffer first, and it stays resident per connection: the default
/// (128 KiB) made zeroing the largest cost of a small message and an idle
/// worker cost 128 KiB. Larger frames still arrive whole (the buffer grows
/// to fit a frame being read).
const READ_BUFFER: usize = 4096;

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
}

/// Answers a WebSocket upgrade request (RFC 6455) with 101, and runs
/// `session` on the socket once the connection is switched.
pub fn accept<F, Fut>(mut req: Request, session: F) -> Response
where
    F: FnOnce(WebSocket, Arc<FrameBudget>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let headers = req.headers();
    let is_upgrade = header_has(headers, header::CONNECTION, "upgrade") && header_has(headers, header::UPGRADE, "websocket");
    if !is_upgrade || headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return (StatusCode::BAD_REQUEST, "a WebSocket upgrade (version 13) is expected here").into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing").into_response();
    };
    let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded").into_response();
    };
    // The connection stays counted (see `listener`) while the session lives.
    let slot = req.extensions_mut().remove::<Arc<super::listener::Slot>>();
    tokio::spawn(async move {
        let _slot = slot;
        let Ok(upgraded) = on_upgrade.await else { return };
        let budget = FrameBudget::new();
        let io = Budgeted { inner: hyper_util::rt::TokioIo::new(upgraded), budget: budget.clone() };
        // Frames a little over the protocol maximum still arrive whole, so the
        // session can answer them with a `TooLarge` error instead of a bare close.
        let limit = idlecore_protocol::MAX_FRAME_BYTES + 64 * 1024;
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        let ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, tokio_tungstenite::tungstenite::protocol::Role::Server, Some(config))
                .await;
        session(ws, budget).await;
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept_key).expect("base64 is a valid header value"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_little_until_it_may_send_results_and_all_hold_a_bounded_total() {
        let b = FrameBudget::new();
        b.read(SMALL_ALLOWANCE).unwrap();
        assert!(b.read(1).is_err(), "past the small allowance before any lease");
        b.message_done();
        b.allow_results();
        b.read(8 << 20).unwrap();
        b.message_done();
        // Many sessions each holding a large unfinished frame: the total is capped.
        let sessions: Vec<_> = (0..20).map(|_| FrameBudget::new()).collect();
        let mut refused = 0;
        for s in &sessions {
            s.allow_results();
            if s.read(15 << 20).is_err() {
                refused += 1;
            }
        }
        assert!(refused >= 20 - GLOBAL_BUDGET / ((15 << 20) - SMALL_ALLOWANCE), "{refused} refused");
        drop(sessions);
        assert_eq!(OVER_SMALL.load(Ordering::Relaxed), 0, "every byte given back");
    }
}
