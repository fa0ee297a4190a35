//! The coordinator as one unit: [`Server::open`] opens the store, settles
//! the job-owner token, starts the native slots and restores unfinished jobs
//! and deployed functions; [`Server::run`] serves a
//! listener until `shutdown` completes, then lets worker sessions say
//! goodbye. The caller (the `idlecore` CLI, tests) binds the listener and
//! decides what shutdown is, as in mini-redis's `server::run`.

use crate::domain::scheduler::Scheduler;
use crate::net::{self, Edge};
use crate::sandbox::native::NativeSlots;
use crate::services::{auth, functions, jobs, Services};
use crate::store::Store;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Everything a coordinator is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the SQLite database.
    pub data: PathBuf,
    /// The job owners' token; `None`: the one stored by an earlier start, or
    /// a new one (see [`Server::generated_token`]).
    pub token: Option<String>,
    pub services: crate::services::Config,
    pub net: net::Config,
    /// Threads that run function calls in the coordinator itself (0: none).
    pub native_slots: usize,
    /// Take worker sessions over WebRTC data channels on this UDP address.
    #[cfg(feature = "webrtc")]
    pub rtc_listen: Option<std::net::SocketAddr>,
}

/// A coordinator whose store is open and whose jobs are restored.
pub struct Server {
    edge: Arc<Edge>,
    stop: watch::Sender<bool>,
    generated_token: Option<String>,
}

impl Server {
    pub async fn open(config: Config) -> anyhow::Result<Server> {
        let open_files = raise_open_files_limit();
        tracing::info!(open_files, "open files allowed (each connected worker holds one)");
        let store = Store::open(&config.data).with_context(|| format!("opening the store in {}", config.data.display()))?;
        let (token, source) = auth::init(&store, config.token.clone()).await?;
        let generated_token = match source {
            auth::TokenSource::Generated(token) => Some(token),
            auth::TokenSource::Stored => {
                tracing::info!("using the job-owner token set on an earlier start (pass --token to replace it)");
                None
            }
            auth::TokenSource::Configured => None,
        };
        let mut epoch = [0u8; 4];
        getrandom::fill(&mut epoch).context("no randomness for the scheduler")?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).context("no randomness for lease ids")?;
        // A lease expires after three missed heartbeats.
        let lease_ttl = Duration::from_millis(config.net.heartbeat_ms as u64) * 3;
        let scheduler = Scheduler::new(u32::from_le_bytes(epoch), lease_ttl, Instant::now()).with_key(key);
        let native = NativeSlots::start(config.native_slots).context("starting the native slots")?;
        let services = Arc::new(Services::new(store, scheduler, token, config.services.clone(), native));
        let (stop, stop_rx) = watch::channel(false);
        #[allow(unused_mut)]
        let mut edge = Edge::new(services.clone(), config.net.clone(), stop_rx);
        #[cfg(feature = "webrtc")]
        if let Some(addr) = config.rtc_listen {
            let hub = net::rtc::RtcHub::bind(addr).await?;
            tracing::info!(addr = %hub.addr(), "WebRTC sessions on UDP");
            edge.rtc = Some(hub);
        }
        let restored = jobs::restore(&services).await.context("restoring unfinished jobs")?;
        if restored > 0 {
            tracing::info!(jobs = restored, "restored unfinished jobs");
        }
        let deployed = functions::restore(&services).context("loading deployed functions")?;
        tracing::info!(functions = deployed, native_slots = config.native_slots, "functions");
        tracing::info!(data = %config.data.display(), "data directory");
        Ok(Server { edge: Arc::new(edge), stop, generated_token })
    }

    /// The job-owner token, when this start made it (only its hash is kept).
    pub fn generated_token(&self) -> Option<&str> {
        self.generated_token.as_deref()
    }

    /// The UDP address of WebRTC sessions, if they are taken.
    #[cfg(feature = "webrtc")]
    pub fn rtc_addr(&self) -> Option<std::net::SocketAddr> {
        self.edge.rtc.as_ref().map(|hub| hub.addr())
    }

    /// Serves `listener` until `shutdown` completes, then closes worker
    /// sessions gracefully (each gets a moment to send its goodbye).
    pub async fn run(self, listener: TcpListener, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Server { edge, stop, .. } = self;
        tracing::info!(addr = %listener.local_addr()?, "coordinator started");
        let ticker = tokio::spawn(tick(edge.services.clone()));
        let app = net::http::router(edge.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
        let cfg = &edge.config;
        let limits = net::listener::Limits {
            // Files are kept for the store, the data directory and the WebRTC socket.
            max_connections: cfg.max_connections.unwrap_or((open_files_limit().saturating_sub(256) as usize).max(64)),
            max_per_address: cfg.max_connections_per_address,
            header_timeout: cfg.request_timeout,
            trusted_proxies: cfg.trusted_proxies.clone(),
        };
        tracing::info!(max = limits.max_connections, per_address = limits.max_per_address, "connection limits");
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop.send(true);
        };
        net::listener::serve(listener, app, limits, shutdown, Duration::from_secs(10)).await;
        ticker.abort();
        // Upgraded WebSockets outlive the HTTP server: let each send its goodbye.
        edge.sessions_closed(Duration::from_secs(5)).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every 500 ms: leases whose heartbeats stopped are requeued, and idle
/// workers get second attempts of stragglers.
async fn tick(services: Arc<Services>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let (expired, speculated) = services.schedule(|s, now| (s.expire(now), s.speculate(now)));
        if expired > 0 {
            tracing::info!(leases = expired, "leases expired without heartbeats; tasks requeued");
        }
        if speculated > 0 {
            tracing::info!(leases = speculated, "second attempts of stragglers sent to idle workers");
        }
    }
}

/// The soft limit on open files now (0 if unknown).
fn open_files_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct passed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return 0;
        }
        #[allow(clippy::unnecessary_cast)]
        let open = limit.rlim_cur as u64;
        open
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// Raises this process's soft limit on open files to its hard limit (every
/// worker connection is a file; a soft limit of 1024 is common) and returns
/// the limit in force.
pub fn raise_open_files_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return 0;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        // `rlim_t` is 32 bits on some targets.
        #[allow(clippy::unnecessary_cast)]
        let open = limit.rlim_cur as u64;
        open
    }
    #[cfg(not(unix))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    /// (soft, hard) of "Max open files" in /proc/self/limits.
    fn open_files_limits() -> (String, String) {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields[3].to_string(), fields[4].to_string())
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let limit = super::raise_open_files_limit();
        let (soft, hard) = open_files_limits();
        assert_eq!(soft, hard, "soft limit raised to the hard one");
        assert_eq!(soft, limit.to_string(), "the limit in force is reported");
    }
}
