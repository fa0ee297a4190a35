//! `idlecore run`: the task author's check. Runs one task in the real browser
//! sandbox — a private coordinator on loopback and one headless Chromium page
//! loading the worker through its script tag — and behaves like `wasmtime run`:
//! stdin in, stdout and stderr out, the task's exit code as its own.

use crate::client::{Client, ClientArgs};
use crate::submit::parse_env;
use anyhow::{bail, Context};
use idlecore_coordinator::domain::model::{DirSpec, FileMap, JobLimits, JobRequest, TaskInput, TaskStatus};
use idlecore_coordinator::domain::policy::Policy;
use idlecore_coordinator::{net, server, services};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit status for a run that ended without an exit code (trap, limit), as a
/// process killed by SIGABRT would report.
pub const FAILED_RUN_STATUS: u8 = 134;

#[derive(Debug, Clone, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Environment variable for the task, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Host directory to give the task, `HOST[::GUEST]` (repeatable). Its files are
    /// copied in; what the task leaves there is written back after the run.
    #[arg(long = "dir")]
    pub dirs: Vec<String>,
    /// Instructions the run may execute (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub fuel: u64,
    /// Wall-clock limit, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Memory limit, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub memory: u32,
    /// Give the task real clocks and entropy instead of ones seeded from the task.
    #[arg(long)]
    pub real_clocks: bool,
    /// The built browser package (default: `$IDLECORE_PKG`, else `pkg/` of the workspace this binary was built in).
    #[arg(long, env = "IDLECORE_PKG")]
    pub pkg: Option<PathBuf>,
    /// The module (WASI preview1 command).
    pub module: PathBuf,
    /// Arguments for the task.
    #[arg(allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// What a run ended with.
pub enum RunOutcome {
    Exited(i32),
    Failed(String),
}

fn find_pkg(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = given.into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/idlecore → the workspace's pkg/
        if let Some(root) = exe.parent().and_then(|p| p.parent()).and_then(|p| p.parent()) {
            candidates.push(root.join("pkg"));
        }
    }
    candidates.push(PathBuf::from("pkg"));
    candidates
        .into_iter()
        .find(|p| p.join("idlecore.js").is_file())
        .context("the browser package was not found: build it with `cargo xtask build` or pass --pkg DIR")
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).context("no randomness")?;
    Ok(hex::encode(raw))
}

pub async fn run(args: RunArgs) -> anyhow::Result<RunOutcome> {
    let dirs = args.dirs.iter().map(|d| HostDir::parse(d)).collect::<anyhow::Result<Vec<_>>>()?;
    if !(args.timeout > 0.0 && args.timeout <= 86_400.0) {
        bail!("--timeout must be between 0 and 86400 seconds");
    }
    let module = std::fs::read(&args.module).with_context(|| format!("reading {}", args.module.display()))?;
    let mut stdin = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin().read_to_end(&mut stdin).context("reading stdin")?;
    }
    let pkg = find_pkg(args.pkg.clone())?;

    let scratch = std::env::temp_dir().join(format!("idlecore-run-{}", random_hex(8)?));
    let www = scratch.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(
        www.join("index.html"),
        "<!doctype html><title>idlecore run</title>\
         <script src=\"/pkg/idlecore.js\" data-coordinator=\"/ws\" data-consent=\"granted\" data-cpu=\"1\" data-max-workers=\"1\"></script>\n",
    )?;
    let token = random_hex(16)?;
    // A private coordinator on loopback: one browser, the task author's own,
    // so there is nothing to check its results against.
    let config = server::Config {
        data: scratch.join("data"),
        token: Some(token.clone()),
        services: services::Config {
            blob_threshold: 256 * 1024,
            max_pending_tasks: 1,
            max_pending_bytes: 1024 << 20,
            validation: Policy::OFF,
        },
        net: net::Config {
            heartbeat_ms: 2000,
            max_module_bytes: 256 << 20,
            max_job_bytes: 512 << 20,
            max_blob_bytes: 256 << 20,
            www: Some(www),
            pkg: Some(pkg),
            ice_servers: vec![],
            trusted_proxies: vec![],
            max_connections: None,
            max_connections_per_address: 1000,
            max_upgrades_per_second: 50,
            request_timeout: std::time::Duration::from_secs(10),
        },
        #[cfg(feature = "webrtc")]
        rtc_listen: None,
    };
    let coordinator = server::Server::open(config).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("binding a loopback port")?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator.run(listener, async move {
        let _ = stopped.await;
    }));
    let profile = scratch.join("chromium");
    let mut browser = crate::browser::open(&format!("{base}/"), &profile)
        .with_context(|| format!("starting {}", crate::browser::chromium_path().display()))?;

    let outcome = run_task(&base, &token, module, stdin, &args, &dirs).await;
    let _ = browser.kill();
    let _ = browser.wait();
    let _ = stop.send(());
    let _ = server.await;
    remove_scratch(&scratch).await;
    outcome
}

/// Removes the run's scratch dir. Chromium's helper processes can still be
/// writing to its profile for a moment after the browser is killed, so a
/// failed removal is tried again.
async fn remove_scratch(scratch: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir_all(scratch) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return,
        }
    }
    tracing::warn!(dir = %scratch.display(), "could not remove the run's scratch dir");
}

/// A `--dir HOST[::GUEST]`: its files go in before the run, and what the task
/// leaves there is written back after it.
struct HostDir {
    host: PathBuf,
    guest: String,
    before: FileMap,
}

impl HostDir {
    fn parse(spec: &str) -> anyhow::Result<HostDir> {
        let (host, guest) = spec.split_once("::").unwrap_or((spec, spec));
        let host = PathBuf::from(host);
        if !host.is_dir() {
            bail!("--dir {spec}: {} is not a directory", host.display());
        }
        let guest = if guest == "." || guest.starts_with('/') { guest.to_string() } else { format!("/{guest}") };
        let mut before = FileMap::default();
        let mut budget = idlecore_protocol::MAX_FRAME_BYTES - 256 * 1024;
        read_tree(&host, "", &mut before, &mut budget).with_context(|| format!("--dir {spec}"))?;
        // `/data/` names `/data`; `/` stays the guest's root.
        let trimmed = guest.trim_end_matches('/');
        let guest = if trimmed.is_empty() { "/" } else { trimmed };
        Ok(HostDir { host, guest: guest.to_string(), before })
    }

    /// Applies the task's writes: new and changed files are written, removed ones deleted.
    fn write_back(&self, files: &FileMap) -> anyhow::Result<()> {
        let prefix = format!("{}/", self.guest.trim_end_matches('/'));
        let after: std::collections::BTreeMap<&str, &Vec<u8>> =
            files.0.iter().filter_map(|(p, d)| p.strip_prefix(&prefix).map(|rel| (rel, d))).collect();
        if let Some(bad) = after.keys().find(|rel| rel.split('/').any(|p| p.is_empty() || p == "." || p == "..")) {
            bail!("the task returned a file with an unsafe path: {bad:?}");
        }
        for (rel, data) in &after {
            if self.before.0.get(*rel) != Some(*data) {
                let path = self.host.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        for rel in self.before.0.keys() {
            if !after.contains_key(rel.as_str()) {
                let path = self.host.join(rel);
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// Reads every regular file under `dir` into `out` by relative path, within
/// `budget` bytes (a task's inputs travel in one protocol frame).
fn read_tree(dir: &std::path::Path, prefix: &str, out: &mut FileMap, budget: &mut usize) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            read_tree(&entry.path(), &rel, out, budget)?;
        } else if kind.is_file() {
            let size = entry.metadata()?.len() as usize;
            if size > *budget {
                bail!(
                    "the directory holds more than the {} bytes a task's inputs may have",
                    idlecore_protocol::MAX_FRAME_BYTES - 256 * 1024
                );
            }
            *budget -= size;
            out.0.insert(rel, std::fs::read(entry.path())?);
        }
    }
    Ok(())
}

async fn run_task(
    base: &str,
    token: &str,
    module: Vec<u8>,
    stdin: Vec<u8>,
    args: &RunArgs,
    dirs: &[HostDir],
) -> anyhow::Result<RunOutcome> {
    let client = Client::new(&ClientArgs { coordinator: base.to_string(), token: Some(token.to_string()) })?;
    let hash = client.upload_module(module).await?;
    let limits = JobLimits {
        timeout_ms: (args.timeout * 1000.0).ceil() as u32,
        max_memory_mib: args.memory,
        max_attempts: 1,
        fuel: args.fuel,
        deterministic: !args.real_clocks,
        ..JobLimits::default()
    };
    let task = TaskInput {
        stdin,
        args: args.args.clone(),
        env: args.env.clone(),
        dirs: dirs
            .iter()
            .map(|d| DirSpec { guest: d.guest.clone(), writable: true, files: d.before.clone(), file_blobs: Default::default() })
            .collect(),
        ..TaskInput::default()
    };
    let job = client.create_job(&JobRequest { module: hash, tasks: vec![task], limits, validation: Some(Policy::OFF) }).await?;
    let mut record = None;
    // The page needs a moment to start; a generous bound on top of the task's own.
    let limit = Duration::from_secs_f64(args.timeout + 60.0);
    tokio::time::timeout(
        limit,
        client.stream_results(job, |r| {
            record = Some(r);
            Ok(())
        }),
    )
    .await
    .context("no result in time: did headless Chromium start? (set IDLECORE_CHROMIUM to its path)")??;
    let r = record.context("the job ended without a result")?;
    std::io::stdout().write_all(&r.stdout)?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(&r.stderr)?;
    for d in dirs {
        d.write_back(&r.files)?;
    }
    Ok(match r.status {
        TaskStatus::Done => RunOutcome::Exited(r.exit_code.unwrap_or(0)),
        TaskStatus::Failed => RunOutcome::Failed(r.error.unwrap_or_default()),
    })
}
