//! `cargo xtask chaos`: one job across headless Chromium visitors, native
//! workers (`idlecore worker`) and simulated workers (`loadgen`), while
//! workers are killed at random (browser closed, native worker sent SIGKILL
//! or SIGTERM, loadgen process killed), connections dropped (browsers and
//! native workers reach the coordinator through a proxy that cuts them;
//! loadgen workers drop their own), and the coordinator is killed with SIGKILL and restarted on the same
//! address and data. Results are validated at the coordinator's defaults
//! (replicas, spot checks, audits). Then every result is checked against the
//! natively built task.
//!
//! Prints one line `tasks N, completed C, lost L, duplicates D, wrong W` and
//! fails unless L, D and W are all 0.

use crate::{build, flag_value, tools};
use anyhow::{bail, Context};
use idlecore_e2e::{run_native, wait_for, Coordinator, CoordinatorConfig, NativeWorker, Paths, Rng, Visitor};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Config {
    pub tasks: u32,
    /// Chance that each worker is killed in each chaos round.
    pub kill_workers: f64,
    pub kill_coordinator: u32,
    pub browsers: u32,
    /// `idlecore worker` processes, two slots each.
    pub natives: u32,
    /// Simulated-worker processes, each with `loadgen_workers` workers.
    pub loadgens: u32,
    pub loadgen_workers: u32,
    pub seed: u64,
}

pub struct Summary {
    pub tasks: u32,
    pub completed: u32,
    pub lost: u32,
    pub duplicates: u32,
    pub wrong: u32,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tasks {}, completed {}, lost {}, duplicates {}, wrong {}",
            self.tasks, self.completed, self.lost, self.duplicates, self.wrong
        )
    }
}

/// The task every worker runs: a short SHA-256 chain, distinct per task.
const ROUNDS: &str = "3000";

fn stdin_of(task: u32) -> Vec<u8> {
    format!("chaos task {task}\n").into_bytes()
}

/// A `loadgen` process with misbehaving workers. Killed (SIGKILL) when dropped.
struct Loadgen(Child);

impl Loadgen {
    fn start(paths: &Paths, c: &Coordinator, workers: u32, seed: u64) -> anyhow::Result<Loadgen> {
        let child = Command::new(paths.native_tasks.join("loadgen"))
            .args(["--coordinator", &c.addr.to_string(), "--workers", &workers.to_string(), "--seed", &seed.to_string()])
            .arg("--exec")
            .arg(paths.native_tasks.join("hashchain"))
            .args(["--slow-ms", "100", "--drop", "0.02", "--fail", "0.02", "--duplicate", "0.05", "--stale", "0.02"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting loadgen (built by `cargo xtask build`)")?;
        Ok(Loadgen(child))
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_coordinator(paths: &Paths, data: &Path, addr: Option<std::net::SocketAddr>) -> anyhow::Result<Coordinator> {
    Coordinator::start(&CoordinatorConfig {
        bin: &paths.bin,
        data,
        token: Some("chaos-token"),
        addr,
        site: Some((&paths.www, &paths.pkg)),
        heartbeat_ms: 500,
        // Result validation at its defaults (the flag is the default; it keeps
        // the harness from turning validation off): replicas, votes and audits
        // go through the kills too.
        extra: &["--replicas", "2"],
    })
}

pub fn chaos(cfg: &Config) -> anyhow::Result<Summary> {
    let paths = Paths::workspace();
    paths.check_built()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut c = start_coordinator(&paths, &data, None)?;
    let addr = c.addr;
    let mut rng = Rng(cfg.seed);

    let stdins: Vec<Vec<u8>> = (0..cfg.tasks).map(stdin_of).collect();
    let args = vec!["--rounds".to_string(), ROUNDS.to_string()];
    let hashchain = paths.native_tasks.join("hashchain");
    let reference: Vec<Vec<u8>> = stdins.iter().map(|s| run_native(&hashchain, &args, s)).collect::<anyhow::Result<_>>()?;

    let module = std::fs::read(paths.tasks.join("hashchain.wasm"))?;
    let api = c.api();
    let hash = api.upload(&module)?;
    let job = api.create_job(&hash, &stdins, &args, json!({ "max_attempts": 3 }))?;

    // Browsers go through a proxy whose connections get cut now and then.
    let proxy = idlecore_e2e::proxy::Proxy::start(addr)?;
    let url = format!("http://{}/visitor.html", proxy.addr);
    let mut browsers: Vec<Option<Visitor>> = (0..cfg.browsers).map(|_| Visitor::open(&url).map(Some)).collect::<anyhow::Result<_>>()?;
    let proxied = format!("http://{}", proxy.addr);
    let native = || NativeWorker::start(&paths.bin, &proxied, &["--slots", "2"]);
    let mut natives: Vec<Option<NativeWorker>> = (0..cfg.natives).map(|_| native().map(Some)).collect::<anyhow::Result<_>>()?;
    let mut loadgens: Vec<Option<Loadgen>> = (0..cfg.loadgens)
        .map(|i| Loadgen::start(&paths, &c, cfg.loadgen_workers, cfg.seed + i as u64).map(Some))
        .collect::<anyhow::Result<_>>()?;

    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut coordinator_kills, mut worker_kills, mut drops) = (0, 0, 0);
    let done = |api: &idlecore_e2e::Api| -> Option<(u64, String)> {
        let s = api.status(job).ok()?;
        Some((s["done"].as_u64()? + s["failed"].as_u64().unwrap_or(0), s["state"].as_str()?.to_string()))
    };
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let api = c.api();
        let Some((finished, state)) = done(&api) else { continue };
        if state != "running" {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("chaos: gave up waiting after 600 s ({finished} of {} finished)", cfg.tasks);
            break;
        }
        // Kill the coordinator at evenly spaced points of progress.
        let due = (coordinator_kills + 1) as u64 * cfg.tasks as u64 / (cfg.kill_coordinator as u64 + 1);
        if coordinator_kills < cfg.kill_coordinator && finished >= due {
            coordinator_kills += 1;
            eprintln!("chaos: SIGKILL coordinator ({coordinator_kills} of {}) at {finished} finished", cfg.kill_coordinator);
            c.kill();
            std::thread::sleep(Duration::from_millis(300));
            c = start_coordinator(&paths, &data, Some(addr))?;
            continue;
        }
        if rng.chance(cfg.kill_workers / 2.0) {
            proxy.cut();
            drops += 1;
        }
        // Kill workers at random; a killed one comes back a round later.
        for b in browsers.iter_mut() {
            match b {
                Some(_) if rng.chance(cfg.kill_workers) => {
                    *b = None;
                    worker_kills += 1;
                }
                None => *b = Some(Visitor::open(&url)?),
                _ => {}
            }
        }
        // Native workers are killed outright or stopped as an operator stops them.
        for n in natives.iter_mut() {
            match n {
                Some(w) if rng.chance(cfg.kill_workers) => {
                    if rng.chance(0.5) {
                        w.terminate(Duration::from_secs(20))?;
                    }
                    *n = None;
                    worker_kills += 1;
                }
                None => *n = Some(native()?),
                _ => {}
            }
        }
        for (i, l) in loadgens.iter_mut().enumerate() {
            match l {
                Some(_) if rng.chance(cfg.kill_workers) => {
                    *l = None;
                    worker_kills += 1;
                }
                None => *l = Some(Loadgen::start(&paths, &c, cfg.loadgen_workers, rng.next_u64() ^ i as u64)?),
                _ => {}
            }
        }
    }
    // The job may have finished between a kill and the restart: make sure the
    // coordinator is up, then read everything back.
    let api = c.api();
    wait_for("the coordinator to answer", Duration::from_secs(30), || api.status(job).ok())?;
    let results = api.results(job)?;
    let mut per_task: HashMap<u32, u32> = HashMap::new();
    let (mut completed, mut wrong) = (0, 0);
    for (task, status, stdout, _) in &results {
        let n = per_task.entry(*task).or_default();
        *n += 1;
        if *n > 1 {
            continue;
        }
        if status == "done" {
            completed += 1;
            if reference.get(*task as usize) != Some(stdout) {
                wrong += 1;
            }
        }
    }
    let duplicates = per_task.values().map(|n| n - 1).sum();
    drop(browsers);
    drop(natives);
    drop(loadgens);
    eprintln!(
        "chaos: {worker_kills} browser, native or loadgen kills, {drops} browser network drops, {coordinator_kills} coordinator kills"
    );
    if coordinator_kills < cfg.kill_coordinator {
        eprintln!("chaos: the job finished before the last {} coordinator kills", cfg.kill_coordinator - coordinator_kills);
    }
    Ok(Summary { tasks: cfg.tasks, completed, lost: cfg.tasks - completed, duplicates, wrong })
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let num = |flag: &str, default: f64| -> anyhow::Result<f64> {
        flag_value(args, flag)?
            .map(|v| v.parse::<f64>().with_context(|| format!("{flag}: not a number")))
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let cfg = Config {
        tasks: num("--tasks", 1000.0)? as u32,
        kill_workers: num("--kill-workers", 0.3)?,
        kill_coordinator: num("--kill-coordinator", 3.0)? as u32,
        browsers: num("--browsers", 2.0)? as u32,
        natives: num("--native", 2.0)? as u32,
        loadgens: num("--loadgens", 3.0)? as u32,
        loadgen_workers: num("--loadgen-workers", 8.0)? as u32,
        seed: num("--seed", 1.0)? as u64,
    };
    if !(0.0..=1.0).contains(&cfg.kill_workers) {
        bail!("--kill-workers is a fraction between 0 and 1");
    }
    tools::ensure()?;
    build::all()?;
    check(&cfg)
}

/// Runs the chaos and fails unless nothing was lost, duplicated or wrong.
pub fn check(cfg: &Config) -> anyhow::Result<()> {
    let summary = chaos(cfg)?;
    println!("{summary}");
    if summary.lost + summary.duplicates + summary.wrong != 0 {
        bail!("chaos found problems: {summary}");
    }
    Ok(())
}
