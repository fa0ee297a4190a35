//! `idlecore submit`: upload a module, submit one task per input, follow
//! progress and write each task's stdout under `--out`.

use crate::client::{Client, ClientArgs};
use anyhow::{bail, Context};
use idlecore_coordinator::domain::model::{BlobFiles, JobLimits, JobRequest, TaskInput, TaskStatus};
use idlecore_coordinator::domain::policy::Policy;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// The task module (WASI preview1 command).
    pub module: PathBuf,
    /// A directory (one task per file, the file as stdin) or a file (one task per line).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where each task's stdout is written (failures as `NAME.error`).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// An argument passed to every task (repeatable).
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// An environment variable for every task, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A file every task reads at `/input/NAME`, `NAME=PATH` (repeatable):
    /// uploaded once as a blob, fetched once per worker.
    #[arg(long = "file", value_parser = parse_file)]
    pub files: Vec<(String, PathBuf)>,
    /// Inputs larger than this, in KiB, are uploaded once each as blobs
    /// (`POST /api/blobs`) and named by hash instead of sent in the job.
    #[arg(long, default_value_t = 256)]
    pub blob_over_kib: usize,
    /// Wall-clock limit per task, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u32,
    /// Memory limit per task, in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// Instructions one run may execute (0: no limit). The same on every machine.
    #[arg(long, default_value_t = 0)]
    pub fuel: u64,
    /// Attempts per task before it is marked failed.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Submit and print the job id without waiting for results.
    #[arg(long)]
    pub no_wait: bool,
    /// Results wanted per task from untrusted workers (default: the coordinator's policy).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replicas: Option<u32>,
    /// Share of accepted tasks spot-checked against known answers (default: the coordinator's policy).
    #[arg(long)]
    pub spot_checks: Option<f64>,
    /// A comparator module (WASI) that decides whether two outputs agree,
    /// for outputs that are not bit-exact (see docs/protocol.md). The job then
    /// sets its own policy: the defaults (2 replicas, 5% spot checks) unless
    /// --replicas / --spot-checks say otherwise.
    #[arg(long)]
    pub comparator: Option<PathBuf>,
    /// Take every result as it comes.
    #[arg(long, conflicts_with_all = ["replicas", "spot_checks", "comparator"])]
    pub no_validation: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl SubmitArgs {
    /// The job's own validation policy, if any flag sets one (`comparator`:
    /// the hash the comparator module was uploaded under).
    fn validation(&self, comparator: Option<idlecore_protocol::Sha256Hash>) -> Option<Policy> {
        if self.no_validation {
            return Some(Policy::OFF);
        }
        if self.replicas.is_none() && self.spot_checks.is_none() && comparator.is_none() {
            return None;
        }
        let d = Policy::default();
        let replicas = self.replicas.unwrap_or(d.replicas);
        Some(Policy {
            replicas,
            max_replicas: d.max_replicas.max(replicas),
            spot_checks: self.spot_checks.unwrap_or(d.spot_checks),
            comparator,
            ..d
        })
    }
}

pub fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    Ok((k.to_string(), v.to_string()))
}

/// Tasks and the output file name of each.
fn parse_file(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or_else(|| format!("expected NAME=PATH, got {s:?}"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("expected NAME=PATH, got {s:?}"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// The shared `--file`s, each uploaded once.
async fn shared_files(client: &Client, files: &[(String, PathBuf)]) -> anyhow::Result<BlobFiles> {
    let mut shared = BlobFiles::default();
    for (name, path) in files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        shared.0.insert(name.clone(), client.upload_blob(bytes).await?);
    }
    Ok(shared)
}

/// Uploads stdins over `over` bytes as blobs (the same bytes once) and names them instead.
async fn stdins_as_blobs(client: &Client, tasks: &mut [TaskInput], over: usize) -> anyhow::Result<()> {
    let mut uploaded = std::collections::HashMap::new();
    for t in tasks.iter_mut().filter(|t| t.stdin.len() > over) {
        let stdin = std::mem::take(&mut t.stdin);
        let key = idlecore_protocol::Sha256Hash::of(&stdin);
        let blob = match uploaded.get(&key) {
            Some(b) => *b,
            None => *uploaded.entry(key).or_insert(client.upload_blob(stdin).await?),
        };
        t.stdin_blob = Some(blob);
    }
    Ok(())
}

fn read_inputs(path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        files.retain(|p| p.is_file());
        files.sort();
        return files
            .into_iter()
            .map(|p| {
                let name = p.file_name().expect("file").to_string_lossy().into_owned();
                Ok((name, std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?))
            })
            .collect();
    }
    let text = std::fs::read(path)?;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let width = lines.len().to_string().len();
    Ok(lines.into_iter().enumerate().map(|(i, l)| (format!("{i:0width$}"), [l, b"\n"].concat())).collect())
}

/// Writes a result's `/output` files under `dir`, refusing paths that would leave it.
fn write_files(dir: &Path, files: &idlecore_coordinator::domain::model::FileMap) -> anyhow::Result<()> {
    let prefix = format!("{}/", idlecore_coordinator::domain::scheduler::OUTPUT_DIR);
    for (path, data) in &files.0 {
        let Some(rel) = path.strip_prefix(&prefix) else { continue };
        if rel.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            bail!("result file {path:?} has an unsafe path");
        }
        let target = dir.join(rel);
        std::fs::create_dir_all(target.parent().expect("joined path has a parent"))?;
        std::fs::write(&target, data).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let module = std::fs::read(&args.module).with_context(|| format!("reading {}", args.module.display()))?;
    let inputs = read_inputs(&args.inputs)?;
    if inputs.is_empty() {
        bail!("{} holds no inputs", args.inputs.display());
    }
    let comparator = match &args.comparator {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(client.upload_module(bytes).await?)
        }
        None => None,
    };
    let hash = client.upload_module(module).await?;
    let file_blobs = shared_files(&client, &args.files).await?;
    let (names, mut tasks): (Vec<String>, Vec<TaskInput>) = inputs
        .into_iter()
        .map(|(name, stdin)| {
            let task =
                TaskInput { stdin, args: args.args.clone(), env: args.env.clone(), file_blobs: file_blobs.clone(), ..TaskInput::default() };
            (name, task)
        })
        .unzip();
    stdins_as_blobs(&client, &mut tasks, args.blob_over_kib.saturating_mul(1024)).await?;
    let limits = JobLimits {
        timeout_ms: args.timeout.saturating_mul(1000),
        max_memory_mib: args.memory,
        max_attempts: args.max_attempts,
        fuel: args.fuel,
        ..JobLimits::default()
    };
    let total = tasks.len() as u64;
    let job = client.create_job(&JobRequest { module: hash, tasks, limits, validation: args.validation(comparator) }).await?;
    println!("job {job}: {total} tasks");
    if args.no_wait {
        return Ok(());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;

    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} done  {msg}  [{elapsed_precise}]").expect("static template"));
    let started = Instant::now();
    let poller = {
        let (bar, client) = (bar.clone(), Client::new(&args.client)?);
        tokio::spawn(async move {
            loop {
                if let Ok(s) = client.status(job).await {
                    let rate = s.done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    bar.set_message(format!("failed {}  in flight {}  {rate:.1} tasks/s", s.failed, s.in_flight));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let mut failed = 0u64;
    let out = args.out.clone();
    let outcome = client
        .stream_results(job, |r| {
            let name = names.get(r.task as usize).context("result for an unknown task")?;
            match r.status {
                TaskStatus::Done => {
                    std::fs::write(out.join(name), &r.stdout)?;
                    write_files(&out.join(format!("{name}.files")), &r.files)?;
                }
                TaskStatus::Failed => {
                    failed += 1;
                    std::fs::write(out.join(format!("{name}.error")), r.error.unwrap_or_default())?;
                }
            }
            bar.inc(1);
            Ok(())
        })
        .await;
    poller.abort();
    bar.finish_and_clear();
    outcome?;
    let status = client.status(job).await?;
    println!(
        "job {job} {}: {} done, {} failed of {} in {:.1} s; outputs in {}",
        status.state,
        status.done,
        status.failed,
        status.tasks,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    if failed > 0 || status.state != "completed" {
        bail!("job {job} did not complete cleanly (see `idlecore status {job}`)");
    }
    Ok(())
}
