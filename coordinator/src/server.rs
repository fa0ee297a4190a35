//! `idlecore serve`: opens the store, restores unfinished jobs, and serves
//! until SIGINT or SIGTERM.

use crate::scheduler::Scheduler;
use crate::state::{AppState, Config};
use crate::store::Store;
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
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.data).with_context(|| format!("opening the store in {}", args.data.display()))?;
    let (token_hash, source) = auth::init(&store, args.token.clone()).await?;
    match source {
        auth::TokenSource::Generated(token) => {
            println!("job-owner token (shown once; only its hash is stored): {token}");
        }
        auth::TokenSource::Stored => {
            tracing::info!("using the job-owner token set on an earlier start (pass --token to replace it)")
        }
        auth::TokenSource::Configured => {}
    }
    let mut epoch = [0u8; 4];
    getrandom::fill(&mut epoch).context("no randomness for the lease epoch")?;
    let heartbeat = Duration::from_millis(args.heartbeat_ms as u64);
    let scheduler = Scheduler::new(u32::from_le_bytes(epoch), heartbeat * 3);
    let config = Config {
        heartbeat_ms: args.heartbeat_ms,
        max_module_bytes: args.max_module_mib * 1024 * 1024,
        max_job_bytes: args.max_job_mib * 1024 * 1024,
        www: args.www.clone(),
        pkg: args.pkg.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(AppState::new(store, scheduler, token_hash, config, stop_rx));
    let restored = jobs::restore(&state).context("restoring unfinished jobs")?;
    if restored > 0 {
        tracing::info!(jobs = restored, "restored unfinished jobs");
    }

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    tracing::info!(%addr, data = %args.data.display(), "coordinator started");

    let ticker_state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let n = ticker_state.scheduler().expire(Instant::now());
            if n > 0 {
                tracing::info!(leases = n, "leases expired without heartbeats; tasks requeued");
            }
        }
    });

    let app = api::router(state.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        })
        .await?;
    // Upgraded WebSockets outlive the HTTP server: let each send its goodbye.
    state.sessions_closed(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
