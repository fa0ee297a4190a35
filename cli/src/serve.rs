//! `idlecore serve`: the coordinator's flags, turned into a plain
//! [`server::Config`]; then the store is opened, the listener bound, the
//! addresses (and a new token) printed, and the coordinator serves until
//! SIGINT or SIGTERM.

use anyhow::Context;
use idlecore_coordinator::domain::policy::Policy;
use idlecore_coordinator::net::client::Cidr;
use idlecore_coordinator::{net, server, services};
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// A reverse proxy (`ADDR` or `ADDR/PREFIX`, repeatable) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the client. Workers'
    /// networks come from these; from any other peer the headers are ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<Cidr>,
    /// Connections open at once, in all (default: the open-files limit less 256).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Connections open at once from one address. Every visitor of a site
    /// behind one NAT shares its address: raise this for such a site (trusted
    /// proxies are not held to it).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_address: u64,
    /// Worker connections (WebSocket upgrades, WebRTC offers) one address may
    /// open per second on average, in bursts of up to ten times this.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_upgrades_per_second: u32,
    /// Threads that run function calls in the coordinator itself, with the
    /// native engine (default: one less than the cores, at least 1; 0: none).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub native_slots: Option<u32>,
    /// Largest function call body (the function's stdin), in MiB.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=15))]
    pub max_call_mib: u64,
    /// Function calls waiting for a run at once, in all; past it calls get 429 with Retry-After.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queued_calls: u64,
    /// Calls of one function waiting for a run at once; past it its calls get 429 with Retry-After.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queued_calls_per_function: u64,
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
        anyhow::ensure!(self.ice_servers.len() <= MAX_ICE_SERVERS, "at most {MAX_ICE_SERVERS} --ice-server");
        let secret = |v: &Option<String>| v.clone().unwrap_or_default();
        let (username, credential) = (secret(&self.turn_username), secret(&self.turn_credential));
        anyhow::ensure!(
            username.len() <= MAX_ICE_BYTES && credential.len() <= MAX_ICE_BYTES,
            "TURN username and credential: at most {MAX_ICE_BYTES} bytes"
        );
        self.ice_servers
            .iter()
            .map(|url| {
                anyhow::ensure!(url.len() <= MAX_ICE_BYTES, "--ice-server {url}: longer than {MAX_ICE_BYTES} bytes");
                let turn = url.starts_with("turn:") || url.starts_with("turns:");
                anyhow::ensure!(
                    turn || url.starts_with("stun:") || url.starts_with("stuns:"),
                    "--ice-server {url}: not a stun:, stuns:, turn: or turns: URL"
                );
                anyhow::ensure!(
                    !turn || !username.is_empty() && !credential.is_empty(),
                    "--ice-server {url}: a TURN server needs --turn-username and --turn-credential"
                );
                let (username, credential) = if turn { (username.clone(), credential.clone()) } else { Default::default() };
                Ok(idlecore_protocol::IceServer { urls: vec![url.clone()], username, credential })
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
        ValidationArgs { replicas: 1, max_replicas: 1, trust_threshold: 10, spot_checks: 0.0, no_validation: true }
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

impl ServeArgs {
    /// The coordinator's configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<server::Config> {
        Ok(server::Config {
            data: self.data.clone(),
            token: self.token.clone(),
            services: services::Config {
                blob_threshold: self.blob_threshold_kib * 1024,
                max_pending_tasks: self.max_pending_tasks,
                max_pending_bytes: self.max_pending_mib * 1024 * 1024,
                validation: self.validation.policy()?,
                calls: services::functions::CallLimits {
                    max_queued: self.max_queued_calls as usize,
                    max_queued_per_function: self.max_queued_calls_per_function as usize,
                },
            },
            net: net::Config {
                heartbeat_ms: self.heartbeat_ms,
                max_module_bytes: self.max_module_mib * 1024 * 1024,
                max_job_bytes: self.max_job_mib * 1024 * 1024,
                max_blob_bytes: self.max_blob_mib as usize * 1024 * 1024,
                max_call_bytes: self.max_call_mib as usize * 1024 * 1024,
                www: self.www.clone(),
                pkg: self.pkg.clone(),
                ice_servers: self.ice.servers()?,
                trusted_proxies: self.trusted_proxies.clone(),
                max_connections: self.max_connections.map(|n| n as usize),
                max_connections_per_address: self.max_connections_per_address as usize,
                max_upgrades_per_second: self.max_upgrades_per_second,
                request_timeout: std::time::Duration::from_secs(10),
            },
            native_slots: self.native_slots.map(|n| n as usize).unwrap_or_else(default_native_slots),
            #[cfg(feature = "webrtc")]
            rtc_listen: self.rtc_listen,
        })
    }
}

/// One less than the cores (the rest serve the network), at least one.
fn default_native_slots() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).saturating_sub(1).max(1)
}

/// Opens the coordinator, binds `--listen`, prints where it listens (and a
/// token made now), and serves until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let server = server::Server::open(args.config()?).await?;
    #[cfg(feature = "webrtc")]
    if let Some(addr) = server.rtc_addr() {
        println!("webrtc on udp {addr}");
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    if let Some(token) = server.generated_token() {
        println!("job-owner token (shown once; only its hash is stored): {token}");
    }
    println!("listening on http://{}", listener.local_addr()?);
    server.run(listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
