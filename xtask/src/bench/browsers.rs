//! End to end with real headless Chromium visitors: throughput of K visitors
//! on a CPU-bound job against the ideal (every executor as fast as a lone
//! one), and start-up (a new visitor's page load to its first result) against
//! the same browser loading a page that does nothing.

use super::{cpu_seconds, Table};
use anyhow::Context;
use idlecore_e2e::{wait_for, Coordinator, CoordinatorConfig, Paths, ProcStat, Visitor};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The CPU-bound task: the same Mandelbrot tile every time, so every task costs the same.
struct Workload {
    args: Vec<String>,
    /// Tasks per executor in a measured job.
    per_executor: usize,
}

fn start(paths: &Paths, data: &Path, www: &Path) -> anyhow::Result<(Coordinator, String)> {
    let c = Coordinator::start(&CoordinatorConfig {
        bin: &paths.bin,
        data,
        token: Some("bench"),
        addr: None,
        site: Some((www, &paths.pkg)),
        heartbeat_ms: 1_000,
        extra: &[],
    })?;
    let module = c.api().upload(&std::fs::read(paths.tasks.join("mandelbrot.wasm"))?)?;
    Ok((c, module))
}

/// Seconds from creating a job of `tasks` tiles to its completion.
fn job_seconds(c: &Coordinator, module: &str, w: &Workload, tasks: usize) -> anyhow::Result<f64> {
    let api = c.api();
    let stdins = vec![b"3 4\n".to_vec(); tasks];
    let started = Instant::now();
    let job = api.create_job(module, &stdins, &w.args, json!({}))?;
    loop {
        let status = api.status(job)?;
        if status["state"] == "completed" {
            anyhow::ensure!(status["failed"] == 0, "the benchmark job had failed tasks: {status}");
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the benchmark job did not complete: {status}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Tasks per second of `visitors` Chromium visitors with `executors` each,
/// after a warm-up job, and where the CPU went meanwhile.
fn throughput(paths: &Paths, w: &Workload, visitors: usize, executors: usize) -> anyhow::Result<(f64, CpuUse)> {
    let dir = tempfile::tempdir()?;
    let www = dir.path().join("www");
    std::fs::create_dir(&www)?;
    std::fs::write(
        www.join("bench.html"),
        format!(
            r#"<!doctype html><script src="/pkg/idlecore.js" data-coordinator="/ws" data-consent="granted" data-cpu="1" data-max-workers="{executors}"></script>"#
        ),
    )?;
    let (c, module) = start(paths, &dir.path().join("data"), &www)?;
    let browsers = (0..visitors).map(|_| Visitor::open(&format!("{}/bench.html", c.base_url()))).collect::<anyhow::Result<Vec<_>>>()?;
    let slots = (visitors * executors) as u64;
    wait_for("the visitors to join", Duration::from_secs(120), || {
        c.api().stats().ok().filter(|s| s["slots"].as_u64() >= Some(slots)).map(|_| ())
    })?;
    // Every executor fetches and compiles the module before the measured job.
    job_seconds(&c, &module, w, visitors * executors * 2)?;
    let tasks = visitors * executors * w.per_executor;
    let pids: Vec<u32> = browsers.iter().map(Visitor::pid).collect();
    let before = CpuUse::sample(c.pid(), &pids)?;
    let seconds = job_seconds(&c, &module, w, tasks)?;
    let used = CpuUse::sample(c.pid(), &pids)?.since(&before, seconds);
    Ok((tasks as f64 / seconds, used))
}

/// Where the machine's CPU went, in cores: the visitors' Chromium Worker
/// threads (the agents and the executors), their other threads, the
/// coordinator, anything else, and idle. Read from `/proc`.
#[derive(Default, Clone, Copy)]
struct CpuUse {
    workers: f64,
    browser: f64,
    coordinator: f64,
    other: f64,
    idle: f64,
}

impl CpuUse {
    /// CPU seconds so far in each place: the coordinator's process, and the
    /// threads of the `visitors`' Chromium processes and their descendants (a
    /// Chromium thread that ended meanwhile is lost to `other`).
    fn sample(coordinator: u32, visitors: &[u32]) -> anyhow::Result<CpuUse> {
        let tck = idlecore_e2e::clock_ticks_per_second()?;
        let mut use_ = CpuUse { coordinator: cpu_seconds(coordinator)?, ..CpuUse::default() };
        for pid in descendants(visitors) {
            let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
            for thread in threads.flatten() {
                let Ok(stat) = std::fs::read_to_string(thread.path().join("stat")) else { continue };
                let Some(thread) = ProcStat::parse(&stat) else { continue };
                let secs = thread.cpu_ticks / tck;
                if thread.name.starts_with("DedicatedWorker") {
                    use_.workers += secs;
                } else {
                    use_.browser += secs;
                }
            }
        }
        // The machine's busy and idle time, for what no thread above accounts
        // for (steal left out: time the hypervisor gave to other machines).
        let stat = std::fs::read_to_string("/proc/stat")?;
        let cpu: Vec<f64> =
            stat.lines().next().context("empty /proc/stat")?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        anyhow::ensure!(cpu.len() >= 7, "short /proc/stat cpu line");
        let busy = (cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6]) / tck;
        use_.idle = (cpu[3] + cpu[4]) / tck;
        use_.other = busy - use_.workers - use_.browser - use_.coordinator;
        Ok(use_)
    }

    /// Cores used in each place between `earlier` and this sample, `seconds` apart.
    fn since(&self, earlier: &CpuUse, seconds: f64) -> CpuUse {
        let d = |a: f64, b: f64| ((a - b) / seconds).max(0.0);
        CpuUse {
            workers: d(self.workers, earlier.workers),
            browser: d(self.browser, earlier.browser),
            coordinator: d(self.coordinator, earlier.coordinator),
            other: d(self.other, earlier.other),
            idle: d(self.idle, earlier.idle),
        }
    }

    fn row(&self) -> String {
        format!("{:.2} | {:.2} | {:.2} | {:.2} | {:.2}", self.workers, self.browser, self.coordinator, self.other, self.idle)
    }
}

/// `roots` and every process descended from them (from each process's parent in `/proc`).
fn descendants(roots: &[u32]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            Some((pid, ProcStat::parse(&stat)?.ppid))
        })
        .collect();
    let mut found = roots.to_vec();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found
}

/// A tiny HTTP server for the baseline page: it serves `page` and notes when
/// the page's `fetch('/loaded')` arrives.
fn blank_page_server() -> anyhow::Result<(String, mpsc::Receiver<Instant>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/blank.html", listener.local_addr()?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            // A connection of its own each: the browser may open one it never uses.
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_err() {
                    return;
                }
                let body = if line.starts_with("GET /loaded") {
                    let _ = tx.send(Instant::now());
                    ""
                } else {
                    "<!doctype html><title>blank</title><script>fetch('/loaded')</script>"
                };
                let mut stream = &stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Ok((url, rx))
}

/// Milliseconds from starting Chromium on the blank page to the page's first request back.
fn blank_page_ms(url: &str, loaded: &mpsc::Receiver<Instant>, profile: &Path) -> anyhow::Result<f64> {
    while loaded.try_recv().is_ok() {}
    let started = Instant::now();
    let _v = Visitor::returning(url, profile)?;
    let at = loaded.recv_timeout(Duration::from_secs(60)).context("the blank page did not load")?;
    Ok((at - started).as_secs_f64() * 1000.0)
}

/// Milliseconds from starting Chromium on a visitor page to each step of
/// its start-up, as the coordinator sees them.
#[derive(Default, Clone, Copy)]
struct Startup {
    /// The worker's session began: page, package, wasm, agent Worker, WebSocket, `Hello`.
    joined: f64,
    /// The task's result was stored: executor, module fetch and compile, the task, the report.
    result: f64,
}

impl Startup {
    fn add(&mut self, other: Startup, weight: f64) {
        self.joined += other.joined * weight;
        self.result += other.result * weight;
    }
}

/// Starts Chromium on a visitor page with a one-task job waiting and times its
/// start-up (polling the coordinator every few milliseconds).
fn first_result(c: &Coordinator, module: &str, args: &[String], profile: &Path) -> anyhow::Result<Startup> {
    let api = c.api();
    let stats = || -> anyhow::Result<serde_json::Value> { Ok(api.request("GET", "/api/stats", None, vec![])?.body) };
    // The previous visitor's session is over before this one starts.
    wait_for("the previous visitor to leave", Duration::from_secs(30), || stats().ok().filter(|s| s["workers"] == 0))?;
    let job = api.create_job(module, &[b"3 4\n".to_vec()], args, json!({}))?;
    let started = Instant::now();
    let visitor = Visitor::returning(&format!("{}/visitor.html", c.base_url()), profile)?;
    let mut joined = None;
    loop {
        let ms = || started.elapsed().as_secs_f64() * 1000.0;
        let s = stats()?;
        if joined.is_none() && s["workers"].as_u64() > Some(0) {
            joined = Some(ms());
        }
        let status = api.status(job)?;
        if status["done"] == 1 {
            let result = ms();
            drop(visitor);
            // Joining and finishing within one poll: dated by the poll that saw both.
            return Ok(Startup { joined: joined.unwrap_or(result), result });
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "no first result: {status}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn section(paths: &Paths, smoke: bool, targets: &mut Table) -> anyhow::Result<String> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let w = if smoke {
        Workload { args: ["--tiles", "8", "--size", "16", "--iter", "100"].map(String::from).to_vec(), per_executor: 2 }
    } else {
        // Enough tasks that the end of the job (a visitor still running its
        // last leases while the other has none left) weighs little.
        Workload { args: ["--tiles", "8", "--size", "256", "--iter", "2000"].map(String::from).to_vec(), per_executor: 40 }
    };
    eprintln!("xtask: bench: end to end, one visitor with one executor");
    let (single, single_cpu) = throughput(paths, &w, 1, 1)?;
    let mut md = format!(
        "## End to end in headless Chromium\n\n\
         K visitors (each its own Chromium process, with the script tag and `data-cpu=\"1\"`) share this machine's\n\
         {cores} cores: each gets {cores}/K executors. A job of identical Mandelbrot tiles (`{}`), {} per executor, runs\n\
         after a warm-up job; tasks/s from creating the job to its completion. Ideal: every executor as fast as a\n\
         lone visitor with one executor, measured in the same run ({single:.2} tasks/s).\n\n\
         | visitors | executors in all | tasks/s | ideal | of ideal |\n| --- | --- | --- | --- | --- |\n\
         | 1 | 1 | {single:.2} | {single:.2} | 100% (the baseline) |\n",
        w.args.join(" "),
        w.per_executor,
    );
    let mut cpu = format!("| 1 × 1 | {} |\n", single_cpu.row());
    for k in [1, 2] {
        let executors = (cores / k).max(1);
        eprintln!("xtask: bench: end to end, {k} visitors with {executors} executors each");
        let (rate, used) = throughput(paths, &w, k, executors)?;
        let ideal = single * (k * executors) as f64;
        md.push_str(&format!("| {k} | {} | {rate:.2} | {ideal:.2} | {:.0}% |\n", k * executors, rate / ideal * 100.0));
        targets.row(
            &format!("{k} Chromium visitor(s): throughput ≥ 95% of the ideal"),
            &format!("{:.0}%", rate / ideal * 100.0),
            rate / ideal >= 0.95,
        );
        cpu.push_str(&format!("| {k} × {executors} | {} |\n", used.row()));
    }
    md.push_str(&format!(
        "\nWhere the {cores} cores went during each measured job, in cores (from `/proc`, per thread): Chromium's\n\
         Worker threads (each visitor's agent and its executors), Chromium's other threads (page, browser and GPU\n\
         processes, compositor, network), the coordinator, everything else busy, and idle.\n\n\
         | visitors × executors | Worker threads | other Chromium threads | coordinator | other | idle |\n\
         | --- | --- | --- | --- | --- | --- |\n{cpu}"
    ));

    eprintln!("xtask: bench: start-up");
    let dir = tempfile::tempdir()?;
    let (c, module) = start(paths, &dir.path().join("data"), &paths.www)?;
    let (blank_url, loaded) = blank_page_server()?;
    let runs = if smoke { 1 } else { 5 };
    // A tiny tile: the figure is start-up, not the task.
    let tiny: Vec<String> = ["--tiles", "8", "--size", "16", "--iter", "100"].map(String::from).to_vec();
    let (mut blank, mut cold, mut warm) = (0.0, Startup::default(), Startup::default());
    for i in 0..runs {
        let profiles = [dir.path().join(format!("blank-{i}")), dir.path().join(format!("visitor-{i}"))];
        blank += blank_page_ms(&blank_url, &loaded, &profiles[0])? / runs as f64;
        // A new visitor, then the same visitor again (module and package in its caches).
        cold.add(first_result(&c, &module, &tiny, &profiles[1])?, 1.0 / runs as f64);
        warm.add(first_result(&c, &module, &tiny, &profiles[1])?, 1.0 / runs as f64);
    }
    let (wasm_gz, js_gz) = crate::build::shipped_gzip_bytes(&paths.pkg)?;
    let package_raw: u64 =
        ["idlecore_wasm_bg.wasm"].iter().map(|f| std::fs::metadata(paths.pkg.join(f)).map(|m| m.len()).unwrap_or(0)).sum();
    let module_path = paths.tasks.join("mandelbrot.wasm");
    let (module_raw, module_gz) = (std::fs::metadata(&module_path)?.len(), crate::build::gzip_len(&module_path)?);
    let kib = |b: u64| format!("{:.1} KiB", b as f64 / 1024.0);
    md.push_str(&format!(
        "\n### Start-up\n\n\
         From starting Chromium on a page to the first result stored, mean of {runs}: the page is `www/visitor.html`\n\
         (script tag, consent given) and a job of one tiny tile (`{}`) is waiting. Baseline: the same browser start on a page that\n\
         only makes one request back. A returning visitor has the package and the module in its caches.\n\n\
         | visit | first result | blank page loaded | idlecore's part |\n| --- | --- | --- | --- |\n\
         | new visitor | {:.0} ms | {blank:.0} ms | {:.0} ms |\n\
         | returning visitor | {:.0} ms | {blank:.0} ms | {:.0} ms |\n\n\
         Where the time goes, in ms from starting Chromium, as the coordinator sees it (polled, 2 ms apart): the\n\
         worker joins (browser start, page, package, wasm compile, agent Worker, WebSocket, `Hello`; its first\n\
         lease follows the `Welcome` at once), then its result is stored (executor start, module fetch and compile,\n\
         the task, the report).\n\n\
         | visit | joined | result stored | joined, less the blank page | joined to result |\n| --- | --- | --- | --- | --- |\n\
         | new visitor | {:.0} | {:.0} | {:.0} | {:.0} |\n\
         | returning visitor | {:.0} | {:.0} | {:.0} | {:.0} |\n\n\
         Bytes a new visitor downloads, gzipped (as the coordinator sends them, from the `.gz` files\n\
         `cargo xtask build` writes):\n\n\
         | what | gzipped | uncompressed |\n| --- | --- | --- |\n\
         | idlecore: the package (wasm + every script) | {} | wasm {} |\n\
         | the task's own module (any system ships it) | {} | {} |\n",
        tiny.join(" "),
        cold.result,
        cold.result - blank,
        warm.result,
        warm.result - blank,
        cold.joined,
        cold.result,
        cold.joined - blank,
        cold.result - cold.joined,
        warm.joined,
        warm.result,
        warm.joined - blank,
        warm.result - warm.joined,
        kib(wasm_gz + js_gz),
        kib(package_raw),
        kib(module_gz),
        kib(module_raw),
    ));
    Ok(md)
}
