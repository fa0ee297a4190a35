//! Harness for end-to-end runs: a real coordinator process, headless Chromium
//! visitors, native workers (`idlecore worker`), a blocking client for the
//! job API, and a scripted protocol worker.
//! Used by the end-to-end tests, the coordinator's integration tests and
//! `cargo xtask demo`.

pub mod api;
pub mod front;
pub mod native;
pub mod proto_worker;
pub mod proxy;

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use api::Api;
pub use native::NativeWorker;
pub use proto_worker::ProtoWorker;

/// Where the built pieces are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    /// The `idlecore` binary.
    pub bin: PathBuf,
    /// The assembled browser package.
    pub pkg: PathBuf,
    pub www: PathBuf,
    /// Example task modules (`*.wasm`, wasm32-wasip1).
    pub tasks: PathBuf,
    /// The same task crates built natively, as a reference.
    pub native_tasks: PathBuf,
}

impl Paths {
    /// Layout of a workspace built by `cargo xtask build` (release profile).
    pub fn workspace() -> Paths {
        let root = std::env::var_os("IDLECORE_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root"));
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        Paths {
            bin: target.join("release/idlecore"),
            pkg: root.join("pkg"),
            www: root.join("www"),
            tasks: target.join("wasm32-wasip1/release"),
            native_tasks: target.join("release"),
            root,
        }
    }

    /// Fails with the command to run when a piece is missing.
    pub fn check_built(&self) -> anyhow::Result<()> {
        for p in [&self.bin, &self.pkg.join("idlecore.js"), &self.tasks.join("mandelbrot.wasm"), &self.native_tasks.join("mandelbrot")] {
            if !p.exists() {
                bail!("{} is missing: run `cargo xtask build` first (or use `cargo xtask test`)", p.display());
            }
        }
        Ok(())
    }
}

/// A coordinator process. Killed (SIGKILL) when dropped.
pub struct Coordinator {
    child: Child,
    pub addr: SocketAddr,
    pub token: String,
    pub data: PathBuf,
}

/// Chooses how a coordinator is started.
pub struct CoordinatorConfig<'a> {
    pub bin: &'a Path,
    pub data: &'a Path,
    /// `None`: let the coordinator generate one and read it from its output.
    pub token: Option<&'a str>,
    /// `None`: any free port.
    pub addr: Option<SocketAddr>,
    /// Serve the demo site and the package.
    pub site: Option<(&'a Path, &'a Path)>,
    pub heartbeat_ms: u32,
    /// More `idlecore serve` flags.
    pub extra: &'a [&'a str],
}

impl Coordinator {
    pub fn start(cfg: &CoordinatorConfig<'_>) -> anyhow::Result<Coordinator> {
        std::fs::create_dir_all(cfg.data)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(cfg.data.join("coordinator.log"))?;
        let mut cmd = Command::new(cfg.bin);
        cmd.arg("serve")
            .arg("--data")
            .arg(cfg.data)
            .arg("--listen")
            .arg(cfg.addr.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1:0".into()))
            .arg("--heartbeat-ms")
            .arg(cfg.heartbeat_ms.to_string())
            .env_remove("IDLECORE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(t) = cfg.token {
            cmd.arg("--token").arg(t);
        }
        // Tests take every result as it comes unless they set a validation flag.
        let validation_flags = ["--replicas", "--max-replicas", "--trust-threshold", "--spot-checks", "--no-validation"];
        if !cfg.extra.iter().any(|a| validation_flags.iter().any(|f| a.starts_with(f))) {
            cmd.arg("--no-validation");
        }
        cmd.args(cfg.extra);
        if let Some((www, pkg)) = cfg.site {
            cmd.arg("--www").arg(www).arg("--pkg").arg(pkg);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {}", cfg.bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut token = cfg.token.map(str::to_owned);
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(cfg.data.join("coordinator.log")).unwrap_or_default();
                    bail!("coordinator did not start; its log:\n{log}");
                }
            };
            if let Some(t) = line.strip_prefix("job-owner token (shown once; only its hash is stored): ") {
                token = Some(t.trim().to_string());
            }
            if let Some(a) = line.strip_prefix("listening on http://") {
                break a.trim().parse::<SocketAddr>()?;
            }
        };
        let token = token.context("the coordinator printed no token and none was given")?;
        Ok(Coordinator { child, addr, token, data: cfg.data.to_path_buf() })
    }

    /// The coordinator's process id (for reading its CPU time and memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base_url(), &self.token)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a graceful exit. Returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        signal(self.child.id(), "TERM")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("coordinator still running {timeout:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("coordinator.log")).unwrap_or_default()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status()?.success();
    if !ok {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

pub use idlecore_cli::browser::{chromium_flags, chromium_path};

/// A headless Chromium with one page open. Killed when dropped.
pub struct Visitor {
    child: Child,
    _profile: Option<tempfile::TempDir>,
}

impl Visitor {
    /// A visitor with a fresh profile of its own.
    pub fn open(url: &str) -> anyhow::Result<Visitor> {
        let profile = tempfile::tempdir()?;
        let mut v = Visitor::returning(url, profile.path())?;
        v._profile = Some(profile);
        Ok(v)
    }

    /// A visitor using `profile`, as a person coming back to a site does.
    pub fn returning(url: &str, profile: &Path) -> anyhow::Result<Visitor> {
        let child = idlecore_cli::browser::open(url, profile).with_context(|| format!("starting {}", chromium_path().display()))?;
        Ok(Visitor { child, _profile: None })
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The browser process (its renderers and helpers descend from it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Visitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// splitmix64: reproducible randomness for choosing misbehaviour and chaos.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Polls `f` until it returns `Some`, or fails after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Inputs of the Mandelbrot example: one `TX TY` line per tile, row by row.
pub fn mandelbrot_inputs(tiles: u32) -> Vec<String> {
    (0..tiles).flat_map(|ty| (0..tiles).map(move |tx| format!("{tx} {ty}\n"))).collect()
}

/// Runs a natively built task with `stdin` and `args`, returning its stdout.
pub fn run_native(program: &Path, args: &[String], stdin: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    child.stdin.take().expect("piped").write_all(stdin)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{} exited with {}", program.display(), out.status);
    }
    Ok(out.stdout)
}

/// CPU seconds (user + system) process `pid` has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let stat = ProcStat::parse(&stat).context("malformed /proc stat")?;
    Ok(stat.cpu_ticks / clock_ticks_per_second()?)
}

/// What a `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) line says of a
/// process or thread.
pub struct ProcStat {
    /// The command or thread name (may hold spaces and parentheses).
    pub name: String,
    pub ppid: u32,
    /// User + system CPU time, in clock ticks (see [`clock_ticks_per_second`]).
    pub cpu_ticks: f64,
}

impl ProcStat {
    pub fn parse(stat: &str) -> Option<ProcStat> {
        // Fields after the name start at `state` (field 3): the parent is
        // field 4, utime and stime are fields 14 and 15.
        let (head, rest) = stat.rsplit_once(')')?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcStat {
            name: head.split_once('(')?.1.to_string(),
            ppid: f.get(1)?.parse().ok()?,
            cpu_ticks: f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?,
        })
    }
}

/// The unit of CPU times in `/proc` (`getconf CLK_TCK`).
pub fn clock_ticks_per_second() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output().context("getconf CLK_TCK")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse::<f64>()?)
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in KiB.
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(line[name.len()..].trim().trim_end_matches("kB").trim().parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
