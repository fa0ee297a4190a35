//! `idlecore run --engine browser`: the task in the real browser sandbox, a
//! private coordinator on loopback and one headless Chromium page loading
//! the worker through its script tag.

use super::{RunArgs, RunOutcome};
use crate::client::{Client, ClientArgs};
use anyhow::Context;
use idlecore_coordinator::domain::model::{FileMap, JobLimits, JobRequest, TaskInput, TaskStatus};
use idlecore_coordinator::domain::policy::Policy;
use idlecore_coordinator::{net, server, services};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Runs the task in headless Chromium; its outcome and the files it left.
pub async fn run(module: Vec<u8>, task: TaskInput, limits: JobLimits, args: &RunArgs) -> anyhow::Result<(RunOutcome, FileMap)> {
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
            calls: services::functions::CallLimits { max_queued: 1, max_queued_per_function: 1 },
        },
        net: net::Config {
            heartbeat_ms: 2000,
            max_module_bytes: 256 << 20,
            max_job_bytes: 512 << 20,
            max_blob_bytes: 256 << 20,
            max_call_bytes: 1 << 20,
            www: Some(www),
            pkg: Some(pkg),
            ice_servers: vec![],
            trusted_proxies: vec![],
            max_connections: None,
            max_connections_per_address: 1000,
            max_upgrades_per_second: 50,
            request_timeout: std::time::Duration::from_secs(10),
        },
        native_slots: 0,
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

    let outcome = run_task(&base, &token, module, task, limits, args.timeout).await;
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

async fn run_task(
    base: &str,
    token: &str,
    module: Vec<u8>,
    task: TaskInput,
    limits: JobLimits,
    timeout: f64,
) -> anyhow::Result<(RunOutcome, FileMap)> {
    let client = Client::new(&ClientArgs { coordinator: base.to_string(), token: Some(token.to_string()) })?;
    let hash = client.upload_module(module).await?;
    let job = client.create_job(&JobRequest { module: hash, tasks: vec![task], limits, validation: Some(Policy::OFF) }).await?;
    let mut record = None;
    // The page needs a moment to start; a generous bound on top of the task's own.
    let limit = Duration::from_secs_f64(timeout + 60.0);
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
    super::print(&r.stdout, &r.stderr)?;
    let outcome = match r.status {
        TaskStatus::Done => RunOutcome::Exited(r.exit_code.unwrap_or(0)),
        TaskStatus::Failed => RunOutcome::Failed(r.error.unwrap_or_default()),
    };
    Ok((outcome, r.files))
}
