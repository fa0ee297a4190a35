//! `idlecore worker`, the real binary against a real coordinator over real
//! sockets: jobs computed as the natively built tasks compute them, modules
//! kept on disk, a stop that gives leases back and loses nothing, a
//! coordinator that appears later, `wss://` through a TLS front proxy, and
//! flags refused with the reason. (With browsers in one quorum:
//! `browsers/native.rs`.)

use idlecore_e2e::front::{FrontConfig, FrontProxy, TestCa};
use idlecore_e2e::*;
use serde_json::json;
use std::time::Duration;

const TOKEN: &str = "native-token";

fn coordinator(paths: &Paths, data: &std::path::Path, addr: Option<std::net::SocketAddr>, extra: &[&str]) -> Coordinator {
    Coordinator::start(&CoordinatorConfig { bin: &paths.bin, data, token: Some(TOKEN), addr, site: None, heartbeat_ms: 1000, extra })
        .expect("coordinator starts")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A Mandelbrot job of `tiles`² tiles: its id and the expected stdout of
/// each task, from the natively built task.
fn mandelbrot_job(paths: &Paths, api: &Api, tiles: u32, iter: &str) -> (u64, Vec<Vec<u8>>) {
    let inputs = mandelbrot_inputs(tiles);
    let task_args = args(&["--tiles", &tiles.to_string(), "--size", "32", "--iter", iter]);
    let module = api.upload(&std::fs::read(paths.tasks.join("mandelbrot.wasm")).unwrap()).unwrap();
    let stdins: Vec<Vec<u8>> = inputs.iter().map(|s| s.as_bytes().to_vec()).collect();
    let job = api.create_job(&module, &stdins, &task_args, json!({})).unwrap();
    let expected = inputs.iter().map(|i| run_native(&paths.native_tasks.join("mandelbrot"), &task_args, i.as_bytes()).unwrap()).collect();
    (job, expected)
}

fn wait_done(api: &Api, job: u64, tasks: u64, timeout: Duration, log: impl Fn() -> String) {
    let done = wait_for("the job to complete", timeout, || {
        let s = api.status(job).ok()?;
        (s["state"] == "completed").then_some(s)
    });
    let s = done.unwrap_or_else(|e| panic!("{e}; worker log:\n{}", log()));
    assert_eq!((s["done"].as_u64(), s["failed"].as_u64()), (Some(tasks), Some(0)), "{s}");
}

#[test]
fn a_native_worker_computes_jobs_and_keeps_modules_on_disk() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(&paths, &dir.path().join("data"), None, &[]);
    let api = c.api();
    let cache = dir.path().join("cache");
    let cache_flag = cache.to_str().unwrap();
    let mut w = NativeWorker::start(&paths.bin, &c.base_url(), &["--slots", "2", "--cache-dir", cache_flag]).unwrap();
    let (job, expected) = mandelbrot_job(&paths, &api, 4, "400");
    wait_done(&api, job, 16, Duration::from_secs(120), || w.log());
    for (task, _, stdout, _) in api.results(job).unwrap() {
        assert!(stdout == expected[task as usize], "tile {task} differs from the native build");
    }
    let fuel: Vec<u64> = api.results_json(job).unwrap().iter().map(|r| r["fuel_used"].as_u64().unwrap()).collect();
    assert!(fuel.iter().all(|f| *f > 0), "every run counted its instructions: {fuel:?}");
    let downloads = api.stats().unwrap()["blob_downloads"].as_u64().unwrap();
    assert_eq!(downloads, 1, "one module download");
    let (status, _) = w.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "a stopped worker exits 0; its log:\n{}", w.log());
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().filter_map(Result::ok).collect();
    assert_eq!(files.len(), 1, "the module is kept on disk");

    // The worker started again runs the module from its disk cache.
    let w = NativeWorker::start(&paths.bin, &c.base_url(), &["--slots", "1", "--cache-dir", cache_flag]).unwrap();
    let (again, _) = mandelbrot_job(&paths, &api, 2, "400");
    wait_done(&api, again, 4, Duration::from_secs(120), || w.log());
    assert_eq!(api.stats().unwrap()["blob_downloads"].as_u64(), Some(downloads), "nothing downloaded again");
}

#[test]
fn stopping_gives_running_leases_back_and_loses_nothing() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(&paths, &dir.path().join("data"), None, &[]);
    let api = c.api();
    // Tasks of a few seconds each, attempted at most once: a withdrawn run
    // is a free retry, anything else would fail the task.
    let module = api.upload(&std::fs::read(paths.tasks.join("hashchain.wasm")).unwrap()).unwrap();
    let task_args = args(&["--rounds", "20000000"]);
    let stdins: Vec<Vec<u8>> = (0..4).map(|i| format!("input {i}").into_bytes()).collect();
    let job = api.create_job(&module, &stdins, &task_args, json!({ "max_attempts": 1 })).unwrap();
    let mut first = NativeWorker::start(&paths.bin, &c.base_url(), &["--slots", "2"]).unwrap();
    wait_for("two runs under way", Duration::from_secs(60), || (api.status(job).ok()?["in_flight"].as_u64()? >= 2).then_some(()))
        .unwrap_or_else(|e| panic!("{e}; worker log:\n{}", first.log()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(api.status(job).unwrap()["done"].as_u64(), Some(0), "the runs were still running when the worker was stopped");
    let (status, took) = first.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{}", first.log());
    assert!(took < Duration::from_secs(5), "the stop waited for the runs instead of giving them back ({took:?})");
    let s = api.status(job).unwrap();
    assert_eq!((s["in_flight"].as_u64(), s["failed"].as_u64()), (Some(0), Some(0)), "leases given back at once, none failed: {s}");
    assert!(first.log().contains("unacknowledged=0"), "{}", first.log());

    let second = NativeWorker::start(&paths.bin, &c.base_url(), &["--slots", "2"]).unwrap();
    wait_done(&api, job, 4, Duration::from_secs(180), || second.log());
    for (task, _, stdout, _) in api.results(job).unwrap() {
        let want = run_native(&paths.native_tasks.join("hashchain"), &task_args, &stdins[task as usize]).unwrap();
        assert_eq!(stdout, want, "task {task}");
    }
}

#[test]
fn a_worker_waits_for_its_coordinator_and_follows_it_through_a_restart() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let w = NativeWorker::start(&paths.bin, &format!("http://{port}"), &["--slots", "1"]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let data = dir.path().join("data");
    let mut c = coordinator(&paths, &data, Some(port), &[]);
    let (job, expected) = mandelbrot_job(&paths, &c.api(), 2, "300");
    wait_done(&c.api(), job, 4, Duration::from_secs(120), || w.log());
    c.kill();
    let c = coordinator(&paths, &data, Some(port), &[]);
    let (job, _) = mandelbrot_job(&paths, &c.api(), 2, "300");
    wait_done(&c.api(), job, 4, Duration::from_secs(120), || w.log());
    let results = c.api().results(job).unwrap();
    assert!(results.iter().all(|(task, _, stdout, _)| *stdout == expected[*task as usize]));
}

#[test]
fn a_worker_reaches_a_coordinator_behind_tls_with_wss() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(&paths, &dir.path().join("data"), None, &[]);
    let ca = TestCa::new().unwrap();
    let front = FrontProxy::start(c.addr, FrontConfig { tls: Some(&ca), ..Default::default() }).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let worker = |roots: &std::path::Path| {
        let mut cmd = std::process::Command::new(&paths.bin);
        cmd.args(["worker", "--slots", "1", "--no-cache", "--coordinator", &format!("https://{}", front.addr)])
            .env("SSL_CERT_FILE", roots)
            .env_remove("SSL_CERT_DIR")
            .env("RUST_LOG", "info");
        cmd
    };
    // Without the CA among its roots, the certificate is refused and said so.
    let empty = dir.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let log = dir.path().join("refused.log");
    let mut refused = worker(&empty).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let said = wait_for("the refusal in the log", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.contains("certificate") || text.contains("UnknownIssuer")).then_some(text)
    });
    let _ = refused.kill();
    let _ = refused.wait();
    said.unwrap();

    let log = dir.path().join("worker.log");
    let mut child = worker(&ca_file).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let api = c.api();
    let (job, expected) = mandelbrot_job(&paths, &api, 2, "300");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_done(&api, job, 4, Duration::from_secs(120), read_log);
    let _ = child.kill();
    let _ = child.wait();
    assert!(read_log().contains("wss://"), "{}", read_log());
    for (task, _, stdout, _) in api.results(job).unwrap() {
        assert!(stdout == expected[task as usize], "tile {task}");
    }
}

#[test]
fn bad_flags_are_refused_with_the_reason() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    for (flags, says) in [
        (&["--coordinator", "ftp://example.org"][..], "http(s):// or ws(s)://"),
        (&["--coordinator", "not a url"][..], "is not a URL"),
        (&["--coordinator", "http://127.0.0.1:9", "--cpu", "2"][..], "--cpu must be"),
        (&["--coordinator", "http://127.0.0.1:9", "--slots", "0"][..], "--slots must be"),
    ] {
        let out = std::process::Command::new(&paths.bin).arg("worker").args(flags).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {text}");
        assert!(text.contains(says), "{flags:?}: {text}");
    }
}

/// A WASI command in WAT around `extra` (more imports, functions, data).
fn command(extra: &str, memory_pages: u32) -> Vec<u8> {
    wat::parse_str(format!(r#"(module {extra} (memory (export "memory") {memory_pages}) (func (export "_start")))"#)).unwrap()
}

/// The hostile and enormous modules the browser tests use
/// (`browsers/faults.rs`): each fails with its kind, or runs, and the
/// worker goes on.
#[test]
fn hostile_and_enormous_modules_fail_with_their_kind_and_the_worker_goes_on() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(&paths, &dir.path().join("data"), None, &[]);
    let api = c.api();
    let w = NativeWorker::start(&paths.bin, &c.base_url(), &["--slots", "2", "--no-cache"]).unwrap();
    let probe = api.upload(&std::fs::read(paths.tasks.join("wasi-probe.wasm")).unwrap()).unwrap();
    let many_imports: String =
        (0..20_000).map(|i| format!(r#"(import "wasi_snapshot_preview1" "sched_yield" (func $y{i} (result i32)))"#)).collect();
    let many_functions: String = (0..50_000).map(|i| format!("(func $f{i} (result i32) i32.const {i})")).collect();
    let big_data = format!(r#"(data (i32.const 0) "{}")"#, "\\00".repeat(24 * 1024 * 1024));
    let uploaded = |module: Vec<u8>| api.upload(&module).unwrap();
    let base = json!({ "timeout_ms": 4000, "max_output_bytes": 10000, "max_attempts": 1 });
    let with = |extra: serde_json::Value| {
        let mut l = base.clone();
        l.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        l
    };
    // (what, module, args, limits, the failure kind or `None` for a run that succeeds)
    type Case<'a> = (&'a str, String, Vec<String>, serde_json::Value, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("spin", probe.clone(), args(&["spin"]), with(json!({})), Some("timeout")),
        ("fuel", probe.clone(), args(&["spin"]), with(json!({ "fuel": 20_000_000, "timeout_ms": 60_000 })), Some("fuel_exhausted")),
        ("trap", probe.clone(), args(&["trap"]), with(json!({})), Some("trap")),
        ("flood", probe.clone(), args(&["flood", "20000"]), with(json!({})), Some("output_limit")),
        ("recurse", probe.clone(), args(&["recurse"]), with(json!({})), Some("trap")),
        ("hog", probe.clone(), args(&["hog", "64"]), with(json!({ "max_memory_mib": 16 })), Some("memory_limit")),
        ("small hog", probe.clone(), args(&["hog", "8"]), with(json!({ "max_memory_mib": 16 })), None),
        ("20k imports", uploaded(command(&many_imports, 1)), vec![], with(json!({ "timeout_ms": 60_000 })), None),
        ("50k functions", uploaded(command(&many_functions, 1)), vec![], with(json!({ "timeout_ms": 60_000 })), None),
        ("24 MiB data, 16 MiB cap", uploaded(command(&big_data, 400)), vec![], with(json!({ "max_memory_mib": 16 })), Some("memory_limit")),
        ("4 GiB initial memory", uploaded(command("", 65536)), vec![], with(json!({})), Some("memory_limit")),
        ("report", probe.clone(), args(&["report", "ok"]), with(json!({})), None),
    ];
    let jobs: Vec<u64> = cases.iter().map(|(_, m, a, l, _)| api.create_job(m, &[b"in".to_vec()], a, l.clone()).unwrap()).collect();
    for (job, (what, _, _, _, want)) in jobs.iter().zip(&cases) {
        wait_for(what, Duration::from_secs(120), || (api.status(*job).ok()?["state"] == "completed").then_some(()))
            .unwrap_or_else(|e| panic!("{e}; worker log:\n{}", w.log()));
        let r = &api.results(*job).unwrap()[0];
        match want {
            Some(kind) => {
                let error = r.3.clone().unwrap_or_default();
                assert_eq!(r.1, "failed", "{what}");
                assert!(error.starts_with(&format!("{kind}: ")), "{what}: {error}");
            }
            None => assert_eq!(r.1, "done", "{what}: {:?}", r.3),
        }
    }
    let report = &api.results(*jobs.last().unwrap()).unwrap()[0];
    assert!(String::from_utf8_lossy(&report.2).contains("args: ok"));
    assert_eq!(api.stats().unwrap()["workers"].as_u64(), Some(1), "the worker stayed connected throughout");
}
