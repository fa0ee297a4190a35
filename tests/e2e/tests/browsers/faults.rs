//! Faults in the browser: hostile and enormous tasks, a network that drops
//! mid-run, executors that cannot start. Each fails cleanly or recovers, and
//! the visitor goes on.

use super::*;

#[test]
fn hostile_tasks_fail_with_their_kind_and_browsers_go_on() {
    let s = setup(1);
    let (api, hash) = (s.c.api(), s.upload("wasi-probe.wasm"));
    // One job per behaviour, so each can have its own arguments and limits.
    let limits = |extra: serde_json::Value| {
        let mut l = json!({ "timeout_ms": 4000, "max_output_bytes": 10000, "max_attempts": 1 });
        l.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        l
    };
    let cases = [
        (args(&["spin"]), json!({}), Some("timeout")),
        (args(&["spin"]), json!({ "fuel": 20_000_000, "timeout_ms": 60_000 }), Some("fuel_exhausted")),
        (args(&["trap"]), json!({}), Some("trap")),
        (args(&["flood", "20000"]), json!({}), Some("output_limit")),
        (args(&["recurse"]), json!({}), Some("trap")),
        (args(&["hog", "64"]), json!({ "max_memory_mib": 16 }), Some("memory_limit")),
        (args(&["hog", "8"]), json!({ "max_memory_mib": 16 }), None),
        (args(&["report", "ok"]), json!({}), None),
    ];
    let jobs: Vec<u64> = cases.iter().map(|(a, l, _)| api.create_job(&hash, &[b"in".to_vec()], a, limits(l.clone())).unwrap()).collect();
    for (job, (a, _, want)) in jobs.iter().zip(&cases) {
        wait_for(&format!("job {a:?} to end"), Duration::from_secs(90), || (api.status(*job).ok()?["state"] == "completed").then_some(()))
            .unwrap();
        let r = &api.results(*job).unwrap()[0];
        match want {
            Some(kind) => {
                assert_eq!(r.1, "failed", "{a:?}");
                let error = r.3.clone().unwrap_or_default();
                assert!(error.starts_with(&format!("{kind}: ")), "{a:?}: {error}");
            }
            None => assert_eq!(r.1, "done", "{a:?}: {:?}", r.3),
        }
    }
    let report = &api.results(*jobs.last().unwrap()).unwrap()[0];
    assert!(String::from_utf8_lossy(&report.2).contains("args: ok"));
    assert_eq!(workers(&api), 1, "the browser stayed connected throughout");
}

/// A WASI command in WAT around `body` (which may define more functions).
fn command(extra: &str, memory_pages: u32) -> Vec<u8> {
    wat::parse_str(format!(r#"(module {extra} (memory (export "memory") {memory_pages}) (func (export "_start")))"#)).unwrap()
}

#[test]
fn enormous_modules_run_or_fail_cleanly_and_the_browser_goes_on() {
    let s = setup(1);
    let api = s.c.api();
    let many_imports: String =
        (0..20_000).map(|i| format!(r#"(import "wasi_snapshot_preview1" "sched_yield" (func $y{i} (result i32)))"#)).collect();
    let many_functions: String = (0..50_000).map(|i| format!("(func $f{i} (result i32) i32.const {i})")).collect();
    let big_data = format!(r#"(data (i32.const 0) "{}")"#, "\\00".repeat(24 * 1024 * 1024));
    let cases: Vec<(&str, Vec<u8>, serde_json::Value, Option<&str>)> = vec![
        ("20k imports", command(&many_imports, 1), json!({}), None),
        ("50k functions", command(&many_functions, 1), json!({}), None),
        ("24 MiB data over a 16 MiB cap", command(&big_data, 400), json!({ "max_memory_mib": 16 }), Some("memory_limit")),
        ("4 GiB initial memory", command("", 65536), json!({}), Some("memory_limit")),
    ];
    for (what, module, limits, want) in cases {
        let hash = api.upload(&module).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut l = json!({ "max_attempts": 1, "timeout_ms": 60_000 });
        l.as_object_mut().unwrap().extend(limits.as_object().unwrap().clone());
        let job = api.create_job(&hash, &[vec![]], &[], l).unwrap();
        wait_for(what, Duration::from_secs(120), || (api.status(job).ok()?["state"] == "completed").then_some(())).unwrap();
        let r = &api.results(job).unwrap()[0];
        match want {
            None => assert_eq!(r.1, "done", "{what}: {:?}", r.3),
            Some(kind) => {
                assert_eq!(r.1, "failed", "{what}");
                assert!(r.3.as_deref().unwrap_or("").starts_with(&format!("{kind}: ")), "{what}: {:?}", r.3);
            }
        }
    }
    // The same browser still runs an ordinary task.
    let probe = s.upload("wasi-probe.wasm");
    let job = api.create_job(&probe, &[vec![]], &args(&["exit", "3"]), json!({})).unwrap();
    wait_for("the ordinary task", Duration::from_secs(60), || (api.status(job).ok()?["state"] == "completed").then_some(())).unwrap();
    assert_eq!(api.results_json(job).unwrap()[0]["exit_code"], 3);
    assert_eq!(workers(&api), 1);
}

#[test]
fn a_run_that_ends_while_the_network_is_down_is_reported_after_reconnecting() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = start(&dir.path().join("data"), &paths, None);
    let proxy = idlecore_e2e::proxy::Proxy::start(c.addr).unwrap();
    let _v = Visitor::open(&format!("http://{}/visitor.html", proxy.addr)).unwrap();
    let api = c.api();
    wait_for("the visitor to join", Duration::from_secs(60), || (workers(&api) >= 1).then_some(())).unwrap();
    let hash = api.upload(&std::fs::read(paths.tasks.join("hashchain.wasm")).unwrap()).unwrap();
    // A first job loads the module, so the next run starts as soon as it is leased.
    let warm = api.create_job(&hash, &[b"warm\n".to_vec()], &args(&["--rounds", "1"]), json!({})).unwrap();
    wait_for("the warm-up job", Duration::from_secs(60), || (api.status(warm).ok()?["state"] == "completed").then_some(())).unwrap();

    let task_args = args(&["--rounds", "8000000"]);
    let job = api.create_job(&hash, &[b"through a drop\n".to_vec()], &task_args, json!({ "timeout_ms": 120000 })).unwrap();
    wait_for("the task to be leased", Duration::from_secs(30), || (api.stats().ok()?["leases"].as_u64()? >= 1).then_some(())).unwrap();
    // A backlog of quick tasks: after the drop the visitor is offered only
    // what its carried-over run leaves free, so nothing needs giving back.
    let quick = api.create_job(&hash, &vec![b"q\n".to_vec(); 6], &args(&["--rounds", "1"]), json!({})).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    proxy.cut();
    wait_for("the job to complete", Duration::from_secs(120), || (api.status(job).ok()?["state"] == "completed").then_some(()))
        .unwrap_or_else(|e| panic!("{e}; coordinator log:\n{}", c.log()));
    wait_for("the quick job", Duration::from_secs(60), || (api.status(quick).ok()?["state"] == "completed").then_some(())).unwrap();
    assert_eq!(api.stats().unwrap()["withdrawn"], 0, "no lease was offered that had to be given back");
    let results = api.results(job).unwrap();
    let expected = run_native(&paths.native_tasks.join("hashchain"), &task_args, b"through a drop\n").unwrap();
    assert_eq!((results[0].1.as_str(), &results[0].2), ("done", &expected));
    assert!(api.stats().unwrap()["adopted"].as_u64().unwrap() >= 1, "the result came from the attempt that ran on through the drop");
}

#[test]
fn executors_that_cannot_start_are_retried_until_they_can() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A copy of the package whose executor script fails to load, for now.
    let pkg = dir.path().join("pkg");
    std::fs::create_dir(&pkg).unwrap();
    for entry in std::fs::read_dir(&paths.pkg).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), pkg.join(entry.file_name())).unwrap();
        }
    }
    let snippets = paths.pkg.join("snippets");
    if snippets.exists() {
        let status = std::process::Command::new("cp").arg("-r").arg(&snippets).arg(&pkg).status().unwrap();
        assert!(status.success());
    }
    let good = std::fs::read(pkg.join("executor.js")).unwrap();
    std::fs::write(pkg.join("executor.js"), "throw new Error('this executor cannot start');\n").unwrap();
    let c = start_site(&dir.path().join("data"), &paths, None, &paths.www, &pkg);
    let _v = visitors(&c, 1);
    let api = c.api();
    let hash = api.upload(&std::fs::read(paths.tasks.join("hashchain.wasm")).unwrap()).unwrap();
    let task_args = args(&["--rounds", "10"]);
    let job = api.create_job(&hash, &[b"a\n".to_vec(), b"b\n".to_vec()], &task_args, json!({})).unwrap();
    // Let the executors fail for a while (past the immediate retries).
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(api.status(job).unwrap()["state"], "running");
    std::fs::write(pkg.join("executor.js"), good).unwrap();
    wait_for("the job once executors can start", Duration::from_secs(120), || {
        (api.status(job).ok()?["state"] == "completed").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; coordinator log:\n{}", c.log()));
    let results = api.results(job).unwrap();
    assert!(results.iter().all(|r| r.1 == "done"), "free failures do not use up attempts: {results:?}");
}
