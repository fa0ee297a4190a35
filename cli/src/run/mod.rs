//! `idlecore run`: the task author's check. Runs one task as a worker would,
//! sandboxed as the coordinator sandboxes every module, and behaves like
//! `wasmtime run`: stdin in, stdout and stderr out, the task's exit code as
//! its own. Two engines give the same answers: `native` (the native worker's
//! wasmtime, in this process; the default) and `browser` (a private
//! coordinator on loopback and one headless Chromium page loading the worker
//! through its script tag).

mod browser;
mod native;

use crate::submit::parse_env;
use anyhow::{bail, Context};
use idlecore_coordinator::domain::model::{DirSpec, FileMap, JobLimits, TaskInput};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

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
    /// Where to run it: `native` (wasmtime, as `idlecore worker` runs tasks)
    /// or `browser` (headless Chromium, as a visitor's browser runs them).
    #[arg(long, value_enum, default_value_t = Engine::Native)]
    pub engine: Engine,
    /// The built browser package (default: `$IDLECORE_PKG`, else `pkg/` of the workspace this binary was built in).
    #[arg(long, env = "IDLECORE_PKG")]
    pub pkg: Option<PathBuf>,
    /// The module (WASI preview1 command).
    pub module: PathBuf,
    /// Arguments for the task.
    #[arg(allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Native,
    Browser,
}

/// What a run ended with.
pub enum RunOutcome {
    Exited(i32),
    Failed(String),
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
    let (task, limits) = task(&args, &dirs, stdin);
    let (outcome, files) = match args.engine {
        Engine::Native => native::run(module, task, limits).await?,
        Engine::Browser => browser::run(module, task, limits, &args).await?,
    };
    for d in &dirs {
        d.write_back(&files)?;
    }
    Ok(outcome)
}

/// The task and limits a job owner would submit for this run.
fn task(args: &RunArgs, dirs: &[HostDir], stdin: Vec<u8>) -> (TaskInput, JobLimits) {
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
    (task, limits)
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

/// Writes what the task printed, as it printed it.
fn print(stdout: &[u8], stderr: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout().write_all(stdout)?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(stderr)?;
    Ok(())
}
