//! The coordinator under load from the native `swarm` (tests/e2e/src/bin/swarm):
//! dispatch of tiny tasks with 1 to 10,000 workers, latency at half load, idle
//! connections held, and jobs of growing size. Each figure has a baseline from
//! the same run: the same swarm against `swarm --echo`, a server that speaks
//! the protocol with nothing behind it (the transport's own cost), or for
//! growth the smallest job.

use super::{cpu_seconds, rss_kib, Table};
use anyhow::{bail, Context};
use idlecore_e2e::{Coordinator, CoordinatorConfig, Paths};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Sizes of one run of the benchmark.
pub struct Sizes {
    /// (workers, tasks) per dispatch row.
    pub dispatch: Vec<(u32, u64)>,
    /// Workers (and tasks) of the half-load latency row.
    pub half_load: (u32, u64),
    /// Idle connections to hold (capped by the open-files limit).
    pub idle: u32,
    /// Job sizes of the growth rows, and the workers running them.
    pub growth: Vec<u64>,
    pub growth_workers: u32,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            dispatch: vec![(1, 5_000), (100, 50_000), (1_000, 100_000), (10_000, 100_000)],
            half_load: (1_000, 50_000),
            idle: 50_000,
            growth: vec![1_000, 10_000, 100_000, 1_000_000],
            growth_workers: 100,
        }
    }

    /// A few seconds in all: proves every path still works (`cargo xtask test`).
    pub fn smoke() -> Sizes {
        Sizes { dispatch: vec![(1, 100), (20, 400)], half_load: (20, 200), idle: 200, growth: vec![100, 1_000], growth_workers: 10 }
    }
}

/// The figures the swarm prints when its tasks are done.
struct Outcome {
    tasks_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    seconds: f64,
}

/// A running swarm whose workers have all joined.
struct Swarm {
    child: Child,
    lines: mpsc::Receiver<String>,
    join_s: f64,
}

impl Swarm {
    fn start(paths: &Paths, server: SocketAddr, workers: u32, tasks: Option<u64>, task_us: u64) -> anyhow::Result<Swarm> {
        let mut cmd = Command::new(paths.native_tasks.join("swarm"));
        cmd.arg("--coordinator").arg(server.to_string()).arg("--workers").arg(workers.to_string());
        if let Some(n) = tasks {
            cmd.arg("--tasks").arg(n.to_string()).arg("--task-us").arg(task_us.to_string());
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("starting swarm")?;
        let lines = read_lines(child.stdout.take().expect("piped"));
        // Owned from here: dropped (and killed) on every way out.
        let mut swarm = Swarm { child, lines, join_s: 0.0 };
        let joined = swarm.lines.recv_timeout(Duration::from_secs(300)).context("the swarm's workers did not join")?;
        swarm.join_s = joined
            .strip_prefix("joined ")
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("swarm: expected `joined W S`, got {joined:?}"))?;
        Ok(swarm)
    }

    fn outcome(self, timeout: Duration) -> anyhow::Result<Outcome> {
        let line = self.lines.recv_timeout(timeout).context("the swarm did not finish its tasks")?;
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("swarm printed {line:?}"))?;
        let f = |k: &str| v[k].as_f64().with_context(|| format!("swarm's {k}"));
        Ok(Outcome { tasks_per_s: f("tasks_per_s")?, p50_us: f("p50_us")?, p99_us: f("p99_us")?, seconds: f("seconds")? })
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lines(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// What the swarm runs against.
enum Server {
    Coordinator { coordinator: Coordinator, module: String, _data: tempfile::TempDir },
    Echo { child: Child, stdin: ChildStdin, addr: SocketAddr },
}

impl Server {
    fn coordinator(paths: &Paths) -> anyhow::Result<Server> {
        let data = tempfile::tempdir()?;
        let coordinator = Coordinator::start(&CoordinatorConfig {
            bin: &paths.bin,
            data: data.path(),
            token: Some("bench"),
            addr: None,
            site: None,
            // Idle workers' heartbeats are part of the load; a browser's default period.
            heartbeat_ms: 30_000,
            // Every simulated worker connects from loopback, all at once.
            extra: &["--max-connections-per-address", "1000000", "--max-upgrades-per-second", "1000000"],
        })?;
        let module = coordinator.api().upload(&std::fs::read(paths.tasks.join("hashchain.wasm"))?)?;
        Ok(Server::Coordinator { coordinator, module, _data: data })
    }

    fn echo(paths: &Paths) -> anyhow::Result<Server> {
        let mut child = Command::new(paths.native_tasks.join("swarm"))
            .arg("--echo")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting swarm --echo")?;
        let lines = read_lines(child.stdout.take().expect("piped"));
        let stdin = child.stdin.take().expect("piped");
        // Owned from here: dropped (and killed) on every way out.
        let mut server = Server::Echo { child, stdin, addr: "127.0.0.1:0".parse()? };
        let line = lines.recv_timeout(Duration::from_secs(10)).context("swarm --echo did not start")?;
        let listening: SocketAddr = line.strip_prefix("listening on ").context("swarm --echo: no address")?.parse()?;
        if let Server::Echo { addr, .. } = &mut server {
            *addr = listening;
        }
        Ok(server)
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Server::Coordinator { coordinator, .. } => coordinator.addr,
            Server::Echo { addr, .. } => *addr,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Server::Coordinator { coordinator, .. } => coordinator.pid(),
            Server::Echo { child, .. } => child.id(),
        }
    }

    /// Hands out `n` tiny tasks: a job for the coordinator, `go N` for the echo server.
    fn submit(&mut self, n: u64) -> anyhow::Result<()> {
        match self {
            Server::Coordinator { coordinator, module, .. } => {
                let mut body = format!("{{\"module\":\"{module}\",\"tasks\":[");
                for i in 0..n {
                    body.push_str(if i == 0 { "{\"stdin\":\"MQ==\"}" } else { ",{\"stdin\":\"MQ==\"}" });
                }
                body.push_str("]}");
                let api = coordinator.api().with_timeout(Duration::from_secs(900));
                let reply = api.request("POST", "/api/jobs", Some("Bearer bench"), body.into_bytes())?;
                if reply.status != 201 {
                    bail!("creating a job of {n} tasks: {} {}", reply.status, reply.body);
                }
                Ok(())
            }
            Server::Echo { stdin, .. } => Ok(writeln!(stdin, "go {n}")?),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Echo { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One run: `workers` join, `tasks` are handed out, the swarm answers them all.
struct Run {
    outcome: Outcome,
    /// Server CPU seconds from the job's creation to the last `Ack`.
    cpu_s: f64,
    /// Seconds to hand the tasks out (creating the job).
    submit_s: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
}

fn run(paths: &Paths, server: &mut Server, workers: u32, tasks: u64, task_us: u64) -> anyhow::Result<Run> {
    let swarm = Swarm::start(paths, server.addr(), workers, Some(tasks), task_us)?;
    let (pid, rss_before_kib) = (server.pid(), rss_kib(server.pid())?);
    let started = Instant::now();
    server.submit(tasks)?;
    let submit_s = started.elapsed().as_secs_f64();
    // Dispatch only: creating the job (parsing, inserting, committing) is in `submit_s`.
    let cpu0 = cpu_seconds(pid)?;
    let expected = Duration::from_secs(120) + Duration::from_micros(tasks * (200 + task_us / workers as u64));
    let outcome = swarm.outcome(expected)?;
    Ok(Run { outcome, cpu_s: cpu_seconds(pid)? - cpu0, submit_s, rss_before_kib, rss_after_kib: rss_kib(pid)? })
}

fn fresh_run(paths: &Paths, echo: bool, workers: u32, tasks: u64, task_us: u64) -> anyhow::Result<Run> {
    let mut server = if echo { Server::echo(paths)? } else { Server::coordinator(paths)? };
    run(paths, &mut server, workers, tasks, task_us)
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

/// The dispatch, half-load and idle tables, and the targets they decide.
pub fn dispatch(paths: &Paths, sizes: &Sizes, targets: &mut Table) -> anyhow::Result<String> {
    let mut md = String::from(
        "## Coordinator dispatch\n\n\
         `swarm` (tests/e2e/src/bin/swarm) connects W workers over WebSocket on loopback, one slot each, and answers\n\
         every lease at once (stdout = stdin); one job of tiny tasks (`--no-validation`) runs through a fresh\n\
         coordinator. Baseline: the same swarm against `swarm --echo`, which answers each result with its `Ack` and\n\
         the next lease and does nothing else (no scheduler, no store). tasks/s: first lease to last `Ack`.\n\
         Latency: a result sent to its `Ack` (the result is durable then). CPU: the server's, in cores (µs per task).\n\
         RSS: the server's resident memory after the run.\n\n\
         | workers | tasks | coordinator tasks/s | p50 | p99 | CPU | RSS | echo tasks/s | p50 | p99 | CPU | RSS | coordinator / echo |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut rate_at_1000 = None;
    for &(workers, tasks) in &sizes.dispatch {
        eprintln!("xtask: bench: dispatch, {workers} workers, {tasks} tasks");
        let c = fresh_run(paths, false, workers, tasks, 0)?;
        let e = fresh_run(paths, true, workers, tasks, 0)?;
        let cpu = |r: &Run| format!("{:.2} ({:.0} µs)", r.cpu_s / r.outcome.seconds, r.cpu_s * 1e6 / tasks as f64);
        md.push_str(&format!(
            "| {workers} | {tasks} | {:.0} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.2}x |\n",
            c.outcome.tasks_per_s,
            ms(c.outcome.p50_us),
            ms(c.outcome.p99_us),
            cpu(&c),
            mib(c.rss_after_kib),
            e.outcome.tasks_per_s,
            ms(e.outcome.p50_us),
            ms(e.outcome.p99_us),
            cpu(&e),
            mib(e.rss_after_kib),
            c.outcome.tasks_per_s / e.outcome.tasks_per_s,
        ));
        if workers == sizes.half_load.0 {
            rate_at_1000 = Some(c.outcome.tasks_per_s);
        }
    }
    let (workers, tasks) = sizes.half_load;
    let full = match rate_at_1000 {
        Some(r) => r,
        None => fresh_run(paths, false, workers, tasks, 0)?.outcome.tasks_per_s,
    };
    targets.row(
        &format!("≥ 50,000 tasks/s at {workers} workers (this machine, swarm on the same cores)"),
        &format!("{full:.0} tasks/s"),
        full >= 50_000.0,
    );
    // Each worker waits D before answering, so W workers offer at most W / D.
    let task_us = (2.0 * workers as f64 / full * 1e6) as u64;
    eprintln!("xtask: bench: half load, {workers} workers, {task_us} µs per task");
    let c = fresh_run(paths, false, workers, tasks, task_us)?;
    let e = fresh_run(paths, true, workers, tasks, task_us)?;
    md.push_str(&format!(
        "\n### Latency at half load\n\n\
         {workers} workers each wait {task_us} µs before answering a lease: half the rate measured above.\n\n\
         | server | tasks/s | p50 | p99 |\n| --- | --- | --- | --- |\n\
         | coordinator | {:.0} | {} | {} |\n| echo baseline | {:.0} | {} | {} |\n",
        c.outcome.tasks_per_s,
        ms(c.outcome.p50_us),
        ms(c.outcome.p99_us),
        e.outcome.tasks_per_s,
        ms(e.outcome.p50_us),
        ms(e.outcome.p99_us),
    ));
    targets.row("p99 result → `Ack` ≤ 5 ms at half that load", &ms(c.outcome.p99_us), c.outcome.p99_us <= 5000.0);
    md.push_str(&idle(paths, sizes.idle, targets)?);
    Ok(md)
}

/// Idle connections: how many are held, and what each costs in RSS.
fn idle(paths: &Paths, wanted: u32, targets: &mut Table) -> anyhow::Result<String> {
    // Each connection is an open file in the server and one in the swarm.
    let limit = idlecore_coordinator::server::raise_open_files_limit();
    let workers = wanted.min(limit.saturating_sub(1_000) as u32);
    let mut rows = Vec::new();
    for echo in [false, true] {
        eprintln!("xtask: bench: {workers} idle connections ({})", if echo { "echo" } else { "coordinator" });
        let server = if echo { Server::echo(paths)? } else { Server::coordinator(paths)? };
        let before = rss_kib(server.pid())?;
        let swarm = Swarm::start(paths, server.addr(), workers, None, 0)?;
        std::thread::sleep(Duration::from_secs(2));
        let after = rss_kib(server.pid())?;
        rows.push(((after.saturating_sub(before)) as f64 * 1024.0 / workers as f64, swarm.join_s));
        drop(swarm);
    }
    let ((c_rss, c_join), (e_rss, e_join)) = (rows[0], rows[1]);
    let held = if workers < wanted {
        format!("{workers} (the most this machine allows: {limit} open files per process)")
    } else {
        workers.to_string()
    };
    targets.row("≤ 16 KiB RSS per idle connection", &format!("{:.1} KiB", c_rss / 1024.0), c_rss <= 16.0 * 1024.0);
    targets.row(&format!("≥ {wanted} idle connections held"), &held, workers >= wanted);
    Ok(format!(
        "\n### Idle connections\n\n\
         {held} workers join (handshake: `Hello`, `Welcome`) and then only send heartbeats. RSS per connection:\n\
         the server's resident memory with all of them joined, less before any, divided by their number.\n\n\
         | server | RSS per connection | all joined after |\n| --- | --- | --- |\n\
         | coordinator | {:.1} KiB | {c_join:.1} s |\n| echo baseline | {:.1} KiB | {e_join:.1} s |\n",
        c_rss / 1024.0,
        e_rss / 1024.0,
    ))
}

/// Jobs of growing size through one fresh coordinator each.
pub fn growth(paths: &Paths, sizes: &Sizes, targets: &mut Table) -> anyhow::Result<String> {
    let workers = sizes.growth_workers;
    let mut md = format!(
        "## Growth\n\n\
         One job of N tiny tasks, created in one request, run by {workers} swarm workers through a fresh coordinator.\n\
         Baseline: the smallest job (per task figures should stay flat as N grows). Memory: the coordinator's\n\
         resident set before the job, at its peak so far (the job's tasks are held in memory until they finish),\n\
         and half a second after the job completed. The largest job runs three times through one coordinator.\n\n\
         | tasks | create the job | per task | run | per task | vs smallest | RSS before | peak | after |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut first_per_task = None;
    let (mut slowest, mut after_jobs) = (1.0f64, vec![]);
    for (i, &tasks) in sizes.growth.iter().enumerate() {
        eprintln!("xtask: bench: growth, {tasks} tasks");
        let mut server = Server::coordinator(paths)?;
        // The largest job runs three times through the same coordinator: its
        // memory after each job shows whether it stays bounded across jobs.
        let jobs = if i + 1 == sizes.growth.len() { 3 } else { 1 };
        for job in 1..=jobs {
            let r = run(paths, &mut server, workers, tasks, 0)?;
            // Memory is handed back once the job's end is recorded, just after the last `Ack`.
            std::thread::sleep(Duration::from_millis(500));
            let (peak, after) = (super::peak_rss_kib(server.pid())?, rss_kib(server.pid())?);
            let run_us = r.outcome.seconds * 1e6 / tasks as f64;
            let base = *first_per_task.get_or_insert(run_us);
            slowest = slowest.max(run_us / base);
            if jobs > 1 {
                after_jobs.push(after);
            }
            let label = if job == 1 { tasks.to_string() } else { format!("{tasks}, job {job} (same coordinator)") };
            md.push_str(&format!(
                "| {label} | {:.2} s | {:.1} µs | {:.2} s | {run_us:.1} µs | {:.2}x | {:.0} MiB | {:.0} MiB | {:.0} MiB |\n",
                r.submit_s,
                r.submit_s * 1e6 / tasks as f64,
                r.outcome.seconds,
                run_us / base,
                r.rss_before_kib as f64 / 1024.0,
                peak as f64 / 1024.0,
                after as f64 / 1024.0,
            ));
        }
    }
    let largest = sizes.growth.last().copied().unwrap_or(0);
    targets.row(
        &format!("growth: time per task flat from {} to {largest} tasks (≤ 1.5x the smallest job's)", sizes.growth[0]),
        &format!("at most {slowest:.2}x"),
        slowest <= 1.5,
    );
    let (first, last) = (after_jobs.first().copied().unwrap_or(0), after_jobs.last().copied().unwrap_or(0));
    targets.row(
        &format!("growth: memory bounded (RSS after a third job of {largest} tasks ≤ after the first + 16 MiB)"),
        &format!("{} after the first, {} after the third", mib(first), mib(last)),
        last <= first + 16 * 1024,
    );
    Ok(md)
}
