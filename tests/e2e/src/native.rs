//! A native worker process (`idlecore worker`), its log in a file. Killed
//! (SIGKILL) when dropped.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct NativeWorker {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl NativeWorker {
    /// `idlecore worker --coordinator URL` with more flags (`--slots 2`...);
    /// modules are cached in a directory of its own unless `extra` says otherwise.
    pub fn start(bin: &Path, coordinator: &str, extra: &[&str]) -> anyhow::Result<NativeWorker> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("worker.log");
        let mut cmd = Command::new(bin);
        cmd.args(["worker", "--coordinator", coordinator]).args(extra);
        if !extra.iter().any(|a| *a == "--no-cache" || *a == "--cache-dir") {
            cmd.arg("--cache-dir").arg(dir.path().join("cache"));
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .env_remove("IDLECORE_COORDINATOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {} worker", bin.display()))?;
        Ok(NativeWorker { child, log, _dir: dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to end by itself; its status.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the worker still runs after {timeout:?}; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for it to stop; its status and how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        super::signal(self.child.id(), "TERM")?;
        let status = self.wait(timeout)?;
        Ok((status, started.elapsed()))
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NativeWorker {
    fn drop(&mut self) {
        self.kill();
    }
}
