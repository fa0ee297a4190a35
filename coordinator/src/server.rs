//! `idlecore serve`: opens the store, restores unfinished jobs, and serves
//! until SIGINT or SIGTERM.

use crate::scheduler::Scheduler;
use crate::state::{AppState, Config};
use crate::store::Store;
use crate::validate::Policy;
use crate::{api, auth, jobs};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database.
    #[arg(long, default_value = "idlecore-data")]
    pub data: PathBuf,
    /// Job-owner bearer token. Without it, one is generated on the first start and printed once.
    #[arg(long, env = "IDLECORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Demo site to serve at `/`.
    #[arg(long)]
    pub www: Option<PathBuf>,
    /// Built browser package (wasm-pack output) to serve at `/pkg/`.
    #[arg(long)]
    pub pkg: Option<PathBuf>,
    /// Worker heartbeat period in milliseconds; a lease expires after three missed ones.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(100..=600_000))]
    pub heartbeat_ms: u32,
    /// Largest module upload, in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_module_mib: usize,
    /// Largest job request body, in MiB.
    #[arg(long, default_value_t = 512)]
    pub max_job_mib: usize,
    /// Largest input blob upload (`POST /api/blobs`), in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub max_blob_mib: u64,
    /// Inline task inputs (stdin or a file) larger than this, in KiB, are
    /// stored once as blobs and fetched by hash (from peers or the
    /// coordinator) instead of travelling in every lease.
    #[arg(long, default_value_t = 256)]
    pub blob_threshold_kib: usize,
    /// Unfinished tasks held in memory at most; new jobs past it get 503 with Retry-After.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_pending_tasks: usize,
    /// Task input bytes held in memory at most, in MiB; new jobs past it get 503 with Retry-After.
    #[arg(long, default_value_t = 2048)]
    pub max_pending_mib: usize,
    #[command(flatten)]
    pub validation: ValidationArgs,
    #[command(flatten)]
    pub ice: IceArgs,
    /// Take worker sessions over WebRTC data channels too (`POST /rtc`), on
    /// this UDP address (an address browsers reach: it is the ICE candidate;
    /// port 0 picks one). For visitors whose network blocks WebSockets.
    #[cfg(feature = "webrtc")]
    #[arg(long)]
    pub rtc_listen: Option<std::net::SocketAddr>,
}

/// STUN/TURN servers handed to workers for their peer connections.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IceArgs {
    /// A STUN or TURN server URL (repeatable): `stun:HOST:PORT`, `turn:HOST:PORT?transport=udp`, `turns:…`.
    #[arg(long = "ice-server")]
    pub ice_servers: Vec<String>,
    /// Username for the TURN servers among `--ice-server`.
    #[arg(long, env = "IDLECORE_TURN_USERNAME")]
    pub turn_username: Option<String>,
    /// Credential for the TURN servers among `--ice-server`.
    #[arg(long, env = "IDLECORE_TURN_CREDENTIAL", hide_env_values = true)]
    pub turn_credential: Option<String>,
}

impl IceArgs {
    /// The servers as workers receive them in `Welcome`, checked.
    pub fn servers(&self) -> anyhow::Result<Vec<idlecore_protocol::IceServer>> {
        use idlecore_protocol::limits::{MAX_ICE_BYTES, MAX_ICE_SERVERS};
        anyhow::ensure!(
            self.ice_servers.len() <= MAX_ICE_SERVERS,
            "at most {MAX_ICE_SERVERS} --ice-server"
        );
        let secret = |v: &Option<String>| v.clone().unwrap_or_default();
        let (username, credential) = (secret(&self.turn_username), secret(&self.turn_credential));
        anyhow::ensure!(
            username.len() <= MAX_ICE_BYTES && credential.len() <= MAX_ICE_BYTES,
            "TURN username and credential: at most {MAX_ICE_BYTES} bytes"
        );
        self.ice_servers
            .iter()
            .map(|url| {
                anyhow::ensure!(
                    url.len() <= MAX_ICE_BYTES,
                    "--ice-server {url}: longer than {MAX_ICE_BYTES} bytes"
                );
                let turn = url.starts_with("turn:") || url.starts_with("turns:");
                anyhow::ensure!(
                    turn || url.starts_with("stun:") || url.starts_with("stuns:"),
                    "--ice-server {url}: not a stun:, stuns:, turn: or turns: URL"
                );
                anyhow::ensure!(
                    !turn || !username.is_empty() && !credential.is_empty(),
                    "--ice-server {url}: a TURN server needs --turn-username and --turn-credential"
                );
                let (username, credential) = if turn {
                    (username.clone(), credential.clone())
                } else {
                    Default::default()
                };
                Ok(idlecore_protocol::IceServer {
                    urls: vec![url.clone()],
                    username,
                    credential,
                })
            })
            .collect()
    }
}

/// Result validation for jobs that do not set their own (`validation` in the job request).
#[derive(Debug, Clone, clap::Args)]
pub struct ValidationArgs {
    /// Results wanted per task from workers not yet trusted.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replicas: u32,
    /// Results at most per task, counting those added when replicas disagree.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub max_replicas: u32,
    /// Verified results in a row before a worker's work may go unreplicated.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub trust_threshold: u32,
    /// Share of accepted tasks that send a known-answer task to a worker.
    #[arg(long, default_value_t = 0.05)]
    pub spot_checks: f64,
    /// Take every result as it comes (for pools of workers you trust).
    #[arg(long)]
    pub no_validation: bool,
}

impl ValidationArgs {
    /// Validation off: for coordinators whose only worker is the operator's own.
    pub fn off() -> ValidationArgs {
        ValidationArgs {
            replicas: 1,
            max_replicas: 1,
            trust_threshold: 10,
            spot_checks: 0.0,
            no_validation: true,
        }
    }

    pub fn policy(&self) -> anyhow::Result<Policy> {
        if self.no_validation {
            return Ok(Policy::OFF);
        }
        let p = Policy {
            replicas: self.replicas,
            max_replicas: self.max_replicas,
            trust_threshold: self.trust_threshold,
            spot_checks: self.spot_checks,
            comparator: None,
        };
        p.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(p)
    }
}

/// A coordinator bound to its address, not yet serving.
pub struct Bound {
    pub addr: std::net::SocketAddr,
    /// Set when this start generated the job-owner token.
    pub generated_token: Option<String>,
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
}

/// Opens the store, settles the token, restores unfinished jobs and binds.
pub async fn bind(args: &ServeArgs) -> anyhow::Result<Bound> {
    let open_files = raise_open_files_limit();
    tracing::info!(open_files, "open files allowed (each connected worker holds one)");
    let store = Store::open(&args.data)
        .with_context(|| format!("opening the store in {}", args.data.display()))?;
    let (token_hash, source) = auth::init(&store, args.token.clone()).await?;
    let generated_token = match source {
        auth::TokenSource::Generated(token) => Some(token),
        auth::TokenSource::Stored => {
            tracing::info!(
                "using the job-owner token set on an earlier start (pass --token to replace it)"
            );
            None
        }
        auth::TokenSource::Configured => None,
    };
    let mut epoch = [0u8; 4];
    getrandom::fill(&mut epoch).context("no randomness for the lease epoch")?;
    let heartbeat = Duration::from_millis(args.heartbeat_ms as u64);
    let mut key = [0u8; 8];
    getrandom::fill(&mut key).context("no randomness for lease ids")?;
    let scheduler =
        Scheduler::new(u32::from_le_bytes(epoch), heartbeat * 3).with_key(u64::from_le_bytes(key));
    let config = Config {
        heartbeat_ms: args.heartbeat_ms,
        max_module_bytes: args.max_module_mib * 1024 * 1024,
        max_job_bytes: args.max_job_mib * 1024 * 1024,
        max_blob_bytes: args.max_blob_mib as usize * 1024 * 1024,
        blob_threshold: args.blob_threshold_kib * 1024,
        max_pending_tasks: args.max_pending_tasks,
        max_pending_bytes: args.max_pending_mib * 1024 * 1024,
        www: args.www.clone(),
        pkg: args.pkg.clone(),
        validation: args.validation.policy()?,
        ice_servers: args.ice.servers()?,
    };
    let (stop, stop_rx) = watch::channel(false);
    #[allow(unused_mut)]
    let mut state = AppState::new(store, scheduler, token_hash, config, stop_rx);
    #[cfg(feature = "webrtc")]
    if let Some(addr) = args.rtc_listen {
        let hub = crate::rtc::RtcHub::bind(addr).await?;
        tracing::info!(addr = %hub.addr(), "WebRTC sessions on UDP");
        println!("webrtc on udp {}", hub.addr());
        state.rtc = Some(hub);
    }
    let state = Arc::new(state);
    let restored = jobs::restore(&state)
        .await
        .context("restoring unfinished jobs")?;
    if restored > 0 {
        tracing::info!(jobs = restored, "restored unfinished jobs");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    Ok(Bound {
        addr,
        generated_token,
        listener,
        state,
        stop,
    })
}

impl Bound {
    /// Serves until `shutdown` completes, then closes worker sessions gracefully.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Bound {
            listener,
            state,
            stop,
            addr,
            ..
        } = self;
        tracing::info!(%addr, "coordinator started");
        let ticker_state = state.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = Instant::now();
                let (expired, speculated) = {
                    let mut s = ticker_state.scheduler();
                    (s.expire(now), s.speculate(now))
                };
                if expired > 0 {
                    tracing::info!(
                        leases = expired,
                        "leases expired without heartbeats; tasks requeued"
                    );
                }
                if speculated > 0 {
                    tracing::info!(
                        leases = speculated,
                        "second attempts of stragglers sent to idle workers"
                    );
                }
            }
        });
        let app = api::router(state.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
        use axum::serve::ListenerExt;
        // Without TCP_NODELAY a lease written right after an `Ack` waits for
        // the worker's delayed ACK (~40 ms): small frames must go at once.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY");
            }
        });
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop.send(true);
        })
        .await?;
        ticker.abort();
        // Upgraded WebSockets outlive the HTTP server: let each send its goodbye.
        state.sessions_closed(Duration::from_secs(5)).await;
        tracing::info!("stopped");
        Ok(())
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let bound = bind(&args).await?;
    if let Some(token) = &bound.generated_token {
        println!("job-owner token (shown once; only its hash is stored): {token}");
    }
    println!("listening on http://{}", bound.addr);
    tracing::info!(data = %args.data.display(), "data directory");
    bound.serve(shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
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

/// Hands the heap's free pages back to the system. The allocator keeps what
/// an ended job's tasks used, for reuse, so the resident set would otherwise
/// stay at the largest job's high-water mark while the coordinator idles.
/// Trimming walks the heap under its locks: at most once per `TRIM_EVERY`
/// (a trim asked for sooner waits its turn; one waits at a time), and never
/// on the async runtime's threads.
pub async fn return_free_memory() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    const TRIM_EVERY: Duration = Duration::from_secs(10);
    static LAST_TRIM: Mutex<Option<tokio::time::Instant>> = Mutex::new(None);
    static WAITING: AtomicBool = AtomicBool::new(false);
    if WAITING.swap(true, Ordering::AcqRel) {
        return; // the trim already waiting covers this job too
    }
    let due = LAST_TRIM
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|last| last + TRIM_EVERY);
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
    *LAST_TRIM.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
    WAITING.store(false, Ordering::Release);
    let _ = tokio::task::spawn_blocking(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory the allocator holds.
        unsafe {
            libc::malloc_trim(0);
        }
    })
    .await;
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
