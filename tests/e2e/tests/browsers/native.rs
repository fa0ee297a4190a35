//! Browsers and native workers side by side: a quorum of one browser and one
//! native worker must agree on every task, and both must count the same
//! fuel, so that they can vote together.

use super::*;

#[test]
fn a_browser_and_a_native_worker_agree_in_one_quorum_and_count_the_same_fuel() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Two results per task from two workers, and no third to settle a disagreement.
    let c = Coordinator::start(&CoordinatorConfig {
        bin: &paths.bin,
        data: &dir.path().join("data"),
        token: Some("e2e-token"),
        addr: None,
        site: Some((&paths.www, &paths.pkg)),
        heartbeat_ms: 2000,
        extra: &["--replicas", "2", "--max-replicas", "2", "--spot-checks", "0"],
    })
    .expect("coordinator starts");
    let api = c.api();
    let browser = visitors(&c, 1);
    let mut native = NativeWorker::start(&paths.bin, &c.base_url(), &["--slots", "1", "--no-cache"]).unwrap();
    wait_for("the native worker to join", Duration::from_secs(60), || (workers(&api) >= 2).then_some(())).unwrap();

    let inputs = mandelbrot_inputs(3);
    let task_args = args(&["--tiles", "3", "--size", "32", "--iter", "500"]);
    let module = api.upload(&std::fs::read(paths.tasks.join("mandelbrot.wasm")).unwrap()).unwrap();
    let stdins: Vec<Vec<u8>> = inputs.iter().map(|s| s.as_bytes().to_vec()).collect();
    let job = api.create_job(&module, &stdins, &task_args, json!({})).unwrap();
    let done = wait_for("the quorum job", Duration::from_secs(180), || {
        let s = api.status(job).ok()?;
        (s["state"] == "completed").then_some(s)
    })
    .unwrap_or_else(|e| panic!("{e}; worker log:\n{}", native.log()));
    assert_eq!((done["done"].as_u64(), done["failed"].as_u64()), (Some(9), Some(0)), "each task agreed on: {done}");
    let expected = reference(&paths, &inputs, &task_args);
    for (task, _, stdout, _) in api.results(job).unwrap() {
        assert!(stdout == expected[task as usize], "tile {task} differs from the native build");
    }

    // The fuel each run counts, on the browser alone and then on the native worker alone.
    let fuel_of = |api: &Api, limits: serde_json::Value| {
        let body = json!({
            "module": module,
            "tasks": stdins.iter().map(|s| json!({ "stdin": B64.encode(s), "args": task_args })).collect::<Vec<_>>(),
            "limits": limits,
            "validation": { "replicas": 1, "max_replicas": 1, "trust_threshold": 10, "spot_checks": 0.0 },
        });
        let created = api.post_job(&body).unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        let job = created.body["id"].as_u64().unwrap();
        wait_for("the job", Duration::from_secs(180), || (api.status(job).ok()?["state"] == "completed").then_some(())).unwrap();
        let mut runs: Vec<(u64, String, u64, String)> = api
            .results_json(job)
            .unwrap()
            .iter()
            .map(|r| {
                let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (r["task"].as_u64().unwrap(), text("status"), r["fuel_used"].as_u64().unwrap_or(0), text("error"))
            })
            .collect();
        runs.sort();
        runs
    };
    let (status, _) = native.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success());
    let on_browser = fuel_of(&api, json!({}));
    assert!(on_browser.iter().all(|r| r.1 == "done" && r.2 > 0), "{on_browser:?}");
    drop(browser);
    let native = NativeWorker::start(&paths.bin, &c.base_url(), &["--slots", "1", "--no-cache"]).unwrap();
    let on_native = fuel_of(&api, json!({}));
    assert_eq!(on_native, on_browser, "the same fuel counted for every task");

    // A fuel limit between the smallest and largest count: the same tasks
    // run out of fuel, after the same number of instructions.
    let mut counts: Vec<u64> = on_native.iter().map(|r| r.2).collect();
    counts.sort();
    let limit = counts[counts.len() / 2];
    let limited = fuel_of(&api, json!({ "fuel": limit, "max_attempts": 1 }));
    for ((task, status, used, error), (_, _, full, _)) in limited.iter().zip(&on_native) {
        if *full <= limit {
            assert_eq!((status.as_str(), used), ("done", full), "task {task}");
        } else {
            assert_eq!(status, "failed", "task {task}");
            assert!(error.contains(&format!("ran out of fuel after {limit} instructions")), "task {task}: {error}");
        }
    }
    assert!(limited.iter().any(|r| r.1 == "failed") && limited.iter().any(|r| r.1 == "done"));
    drop(native);
}
