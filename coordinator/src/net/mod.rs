//! The network edges: HTTP routes for job owners and workers (`http`),
//! worker sessions over a WebSocket or a WebRTC data channel (`sessions`,
//! `rtc`), and who a request comes from (`client`: addresses through trusted
//! proxies, network origins, site keys). Everything here turns bytes on a
//! socket into service calls and service answers back into bytes; errors
//! become HTTP statuses or protocol `Error` frames here and nowhere else.

pub mod client;
pub mod http;
pub mod listener;
pub mod rate;
#[cfg(feature = "webrtc")]
pub mod rtc;
pub mod sessions;
pub mod upgrade;

use crate::services::Services;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// What the edges are configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often workers heartbeat; a session silent for three of these ends.
    pub heartbeat_ms: u32,
    /// Largest request bodies taken, by endpoint.
    pub max_module_bytes: usize,
    pub max_job_bytes: usize,
    pub max_blob_bytes: usize,
    /// A function call's body (its stdin).
    pub max_call_bytes: usize,
    /// Demo site served at `/`.
    pub www: Option<PathBuf>,
    /// Built browser package served at `/pkg/`.
    pub pkg: Option<PathBuf>,
    /// STUN/TURN servers workers use for peer connections.
    pub ice_servers: Vec<idlecore_protocol::IceServer>,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers name the client.
    pub trusted_proxies: Vec<client::Cidr>,
    /// Connections open at once in all (`None`: the open-files limit less a reserve).
    pub max_connections: Option<usize>,
    /// Connections open at once from one address (trusted proxies excepted).
    pub max_connections_per_address: usize,
    /// Worker connections (`/ws` upgrades, `/rtc` offers) one client address
    /// may open per second, on average (bursts of ten times that).
    pub max_upgrades_per_second: u32,
    /// How long a client may take to send a request's headers, and a body's
    /// next bytes.
    pub request_timeout: Duration,
}

/// The edges' shared state: the services they call, their settings, the
/// worker sessions open, and the signal to end them.
pub struct Edge {
    pub services: Arc<Services>,
    pub config: Config,
    /// Flips to true when the coordinator starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Worker sessions over WebRTC data channels (`--rtc-listen`).
    #[cfg(feature = "webrtc")]
    pub rtc: Option<rtc::RtcHub>,
    /// Worker connections opened, by client address (see `rate`).
    pub upgrades: rate::AddressRate,
    sessions: AtomicUsize,
    /// Of those, the ones over WebRTC data channels.
    data_channel_sessions: AtomicUsize,
    session_ended: Notify,
}

/// Counts a worker session as open until dropped.
pub struct SessionGuard<'a>(&'a Edge, sessions::Transport);

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        if self.1 == sessions::Transport::DataChannel {
            self.0.data_channel_sessions.fetch_sub(1, Ordering::SeqCst);
        }
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
        self.0.session_ended.notify_waiters();
    }
}

impl Edge {
    pub fn new(services: Arc<Services>, config: Config, shutdown: watch::Receiver<bool>) -> Edge {
        Edge {
            services,
            shutdown,
            #[cfg(feature = "webrtc")]
            rtc: None,
            upgrades: rate::AddressRate::new(config.max_upgrades_per_second, config.max_upgrades_per_second.saturating_mul(10)),
            sessions: AtomicUsize::new(0),
            data_channel_sessions: AtomicUsize::new(0),
            session_ended: Notify::new(),
            config,
        }
    }

    pub fn open_session(&self, transport: sessions::Transport) -> SessionGuard<'_> {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        if transport == sessions::Transport::DataChannel {
            self.data_channel_sessions.fetch_add(1, Ordering::SeqCst);
        }
        SessionGuard(self, transport)
    }

    /// Worker sessions open now: (over WebSockets, over data channels).
    pub fn sessions_by_transport(&self) -> (usize, usize) {
        let rtc = self.data_channel_sessions.load(Ordering::SeqCst);
        (self.sessions.load(Ordering::SeqCst).saturating_sub(rtc), rtc)
    }

    /// Waits until every worker session has closed, or `limit` passes.
    pub async fn sessions_closed(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.sessions.load(Ordering::SeqCst) > 0 {
            let ended = self.session_ended.notified();
            if self.sessions.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
    }
}
