//! `idlecore worker`: a native worker for a coordinator, on any machine
//! (see `idlecore-native-worker`). Parses its flags into the worker's
//! config and runs it until SIGINT or SIGTERM.

use anyhow::bail;
use idlecore_native_worker::Config;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The coordinator: its URL (`https://host`, the worker endpoint `/ws` is
    /// added) or its worker endpoint (`wss://host/ws`).
    #[arg(long, env = "IDLECORE_COORDINATOR")]
    pub coordinator: String,
    /// Tasks run at once (default: the machine's cores less one, at least one).
    #[arg(long)]
    pub slots: Option<u32>,
    /// Share of all the machine's cores to use, from 0 to 1 (as the browser
    /// worker's budget: executors rest between runs to keep it). Default:
    /// each slot computes without rest.
    #[arg(long)]
    pub cpu: Option<f64>,
    /// The site key to connect under.
    #[arg(long)]
    pub site: Option<String>,
    /// Modules kept on disk between runs, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub module_cache_mib: u64,
    /// Where modules are kept (default: `idlecore/modules` in the user's cache directory).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Keep no modules on disk.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

/// Compiled modules kept in memory.
const MODULE_MEMORY: u64 = 256 << 20;
/// Task inputs kept in memory (a lease needing more fails).
const INPUT_MEMORY: u64 = 1 << 30;

impl WorkerArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        if let Some(cpu) = self.cpu {
            if !(cpu > 0.0 && cpu <= 1.0) {
                bail!("--cpu must be above 0 and at most 1 (a share of all cores)");
            }
        }
        if self.slots == Some(0) {
            bail!("--slots must be at least 1");
        }
        let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let cache_dir = if self.no_cache { None } else { self.cache_dir.clone().or_else(default_cache_dir) };
        Ok(Config {
            coordinator: self.coordinator.clone(),
            slots: self.slots.unwrap_or_else(|| idlecore_agent_core::budget::default_max_workers(cores)),
            cpu: self.cpu,
            site: self.site.clone(),
            module_memory: MODULE_MEMORY,
            input_memory: INPUT_MEMORY,
            cache_dir,
            disk_cache: self.module_cache_mib << 20,
        })
    }
}

/// `$XDG_CACHE_HOME/idlecore/modules`, else `~/.cache/idlecore/modules`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("idlecore").join("modules"))
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    idlecore_native_worker::run(config, stop_signal()).await
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
