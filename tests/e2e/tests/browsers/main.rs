//! End to end: a real coordinator, headless Chromium pages that load the demo
//! page through its script tag, and real jobs. Needs `cargo xtask build`
//! (run through `cargo xtask test`). Faults (hostile and enormous tasks, a
//! network that drops, executors that cannot start) are in `faults.rs`;
//! browsers beside native workers in `native.rs`.

mod faults;
mod native;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use idlecore_e2e::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

fn start(data: &std::path::Path, paths: &Paths, addr: Option<std::net::SocketAddr>) -> Coordinator {
    start_site(data, paths, addr, &paths.www, &paths.pkg)
}

/// A coordinator serving `www` as its site and `pkg` as the package.
fn start_site(
    data: &std::path::Path,
    paths: &Paths,
    addr: Option<std::net::SocketAddr>,
    www: &std::path::Path,
    pkg: &std::path::Path,
) -> Coordinator {
    Coordinator::start(&CoordinatorConfig {
        bin: &paths.bin,
        data,
        token: Some("e2e-token"),
        addr,
        site: Some((www, pkg)),
        heartbeat_ms: 2000,
        extra: &[],
    })
    .expect("coordinator starts")
}

/// A coordinator serving the demo site, with `n` visitors joined.
struct Setup {
    paths: Paths,
    dir: tempfile::TempDir,
    c: Coordinator,
    _visitors: Vec<Visitor>,
}

fn setup(n: usize) -> Setup {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = start(&dir.path().join("data"), &paths, None);
    let _visitors = visitors(&c, n);
    Setup { paths, dir, c, _visitors }
}

impl Setup {
    /// Uploads a task module built by the xtask.
    fn upload(&self, task: &str) -> String {
        self.c.api().upload(&std::fs::read(self.paths.tasks.join(task)).unwrap()).unwrap()
    }
}

fn workers(api: &Api) -> u64 {
    api.stats().ok().and_then(|s| s["workers"].as_u64()).unwrap_or(0)
}

fn visitors(c: &Coordinator, n: usize) -> Vec<Visitor> {
    let v: Vec<Visitor> = (0..n).map(|_| Visitor::open(&format!("{}/visitor.html", c.base_url())).unwrap()).collect();
    let api = c.api();
    wait_for("the visitors to join", Duration::from_secs(60), || (workers(&api) >= n as u64).then_some(())).unwrap();
    v
}

/// Expected stdout of each Mandelbrot tile, from the natively built task.
fn reference(paths: &Paths, inputs: &[String], args: &[String]) -> Vec<Vec<u8>> {
    inputs.iter().map(|i| run_native(&paths.native_tasks.join("mandelbrot"), args, i.as_bytes()).unwrap()).collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn two_browsers_compute_a_job_submitted_with_the_cli() {
    let Setup { paths, dir, c, _visitors } = setup(2);
    let inputs = mandelbrot_inputs(8);
    let task_args = args(&["--tiles", "8", "--size", "48", "--iter", "600"]);
    let input_file = dir.path().join("tiles.txt");
    std::fs::write(&input_file, inputs.concat()).unwrap();
    let out = dir.path().join("out");
    let mut submit = std::process::Command::new(&paths.bin);
    submit.arg("submit").arg(paths.tasks.join("mandelbrot.wasm")).arg("--inputs").arg(&input_file).arg("--out").arg(&out).args([
        "--coordinator",
        &c.base_url(),
        "--token",
        "e2e-token",
    ]);
    for a in &task_args {
        submit.arg(format!("--arg={a}"));
    }
    let status = submit.status().unwrap();
    assert!(status.success(), "idlecore submit failed; coordinator log:\n{}", c.log());

    let expected = reference(&paths, &inputs, &task_args);
    assert_eq!(inputs.len(), 64);
    for (i, want) in expected.iter().enumerate() {
        let got = std::fs::read(out.join(format!("{i:02}"))).unwrap();
        assert!(got == *want, "tile {i} differs from the native build");
    }
}

#[test]
fn a_coordinator_killed_mid_job_loses_nothing_and_browsers_come_back() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = start(&data, &paths, None);
    let addr = c.addr;
    let _v = visitors(&c, 2);

    let inputs = mandelbrot_inputs(10);
    let task_args = args(&["--tiles", "10", "--size", "48", "--iter", "3000"]);
    let api = c.api();
    let module = std::fs::read(paths.tasks.join("mandelbrot.wasm")).unwrap();
    let hash = api.upload(&module).unwrap();
    let stdins: Vec<Vec<u8>> = inputs.iter().map(|s| s.as_bytes().to_vec()).collect();
    let job = api.create_job(&hash, &stdins, &task_args, json!({})).unwrap();

    wait_for("some results before the crash", Duration::from_secs(120), || (api.status(job).ok()?["done"].as_u64()? >= 15).then_some(()))
        .unwrap();
    let before: BTreeMap<u32, Vec<u8>> = api.results(job).unwrap().into_iter().map(|r| (r.0, r.2)).collect();
    assert!(before.len() < inputs.len(), "the job finished before the crash; make tasks slower");
    c.kill();
    std::thread::sleep(Duration::from_millis(500));

    let c = start(&data, &paths, Some(addr));
    let api = c.api();
    wait_for("the browsers to reconnect", Duration::from_secs(60), || (workers(&api) >= 2).then_some(())).unwrap();
    wait_for("the job to complete after the restart", Duration::from_secs(300), || {
        (api.status(job).ok()?["state"] == "completed").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; status {:?}; coordinator log:\n{}", api.status(job).ok(), c.log()));

    let after = api.results(job).unwrap();
    assert_eq!(after.len(), inputs.len());
    let expected = reference(&paths, &inputs, &task_args);
    for (task, status, stdout, _) in &after {
        assert_eq!(status, "done");
        assert!(stdout == &expected[*task as usize], "tile {task} differs from the native build");
        if let Some(old) = before.get(task) {
            assert_eq!(old, stdout, "a result accepted before the crash changed");
        }
    }
}

#[test]
fn fuel_used_is_the_same_on_every_run_of_a_task() {
    let s = setup(2);
    let (api, hash) = (s.c.api(), s.upload("mandelbrot.wasm"));
    // The same tile eight times, spread over two browsers.
    let stdins = vec![b"3 4\n".to_vec(); 8];
    let job = api.create_job(&hash, &stdins, &args(&["--tiles", "8", "--size", "32", "--iter", "300"]), json!({})).unwrap();
    wait_for("the job", Duration::from_secs(60), || (api.status(job).ok()?["state"] == "completed").then_some(())).unwrap();
    let results = api.results_json(job).unwrap();
    let fuel: Vec<u64> = results.iter().map(|r| r["fuel_used"].as_u64().unwrap()).collect();
    assert_eq!(fuel.len(), 8);
    assert!(fuel[0] > 100_000, "a tile takes many instructions: {}", fuel[0]);
    assert!(fuel.iter().all(|&f| f == fuel[0]), "{fuel:?}");
}

#[test]
fn input_files_go_in_and_output_files_come_back() {
    let s = setup(1);
    let (api, hash) = (s.c.api(), s.upload("wasi-probe.wasm"));
    let body = json!({
        "module": hash,
        "tasks": [{ "args": ["copy"], "files": { "in.txt": "aGVsbG8gZmlsZXM=" } }],
    });
    let auth = "Bearer e2e-token";
    let created = api.request("POST", "/api/jobs", Some(auth), body.to_string().into_bytes()).unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let job = created.body["id"].as_u64().unwrap();
    wait_for("the job", Duration::from_secs(60), || (api.status(job).ok()?["state"] == "completed").then_some(())).unwrap();
    let r = &api.results_json(job).unwrap()[0];
    assert_eq!(r["status"], "done", "{r}");
    // "HELLO FILES" in base64.
    assert_eq!(r["files"]["/output/sub/out.txt"], "SEVMTE8gRklMRVM=", "{r}");
}

/// Both the browser's HTTP cache (modules are immutable) and the agent's Cache
/// API store can serve the second visit; `tests/agent_blobs.rs` checks the latter alone.
#[test]
fn a_returning_visitor_does_not_download_the_module_again() {
    let s = setup(0);
    let (api, hash, c) = (s.c.api(), s.upload("wasi-probe.wasm"), &s.c);
    let profile = s.dir.path().join("profile");
    let downloads = || api.stats().unwrap()["blob_downloads"].as_u64().unwrap();
    for visit in 0..2 {
        let mut visitor = Visitor::returning(&format!("{}/visitor.html", c.base_url()), &profile).unwrap();
        wait_for("the visitor to join", Duration::from_secs(60), || (workers(&api) == 1).then_some(())).unwrap();
        let job = api.create_job(&hash, &[vec![]], &args(&["exit", "0"]), json!({})).unwrap();
        wait_for("the job", Duration::from_secs(60), || (api.status(job).ok()?["state"] == "completed").then_some(())).unwrap();
        assert_eq!(downloads(), 1, "visit {visit}: the module was downloaded once in all");
        // Downloaded or from its cache, the visitor tells the coordinator it holds the module.
        let peers = api.stats().unwrap()["peers"].clone();
        assert_eq!((&peers["blobs"], &peers["holders"]), (&json!(1), &json!(1)), "visit {visit}: {peers}");
        if visit == 0 {
            a_malformed_offer_is_turned_down(c, &hash);
        }
        assert!(visitor.is_running());
        drop(visitor);
        wait_for("the visitor to leave", Duration::from_secs(30), || (workers(&api) == 0).then_some(())).unwrap();
    }
}

/// A protocol client that wants the module (by the hash leases name) is
/// introduced to the visitor and sends it an offer that is not SDP: the
/// visitor's page cannot use it, so the agent turns it down with `Close` at
/// once (the asker falls back to the coordinator) and goes on running.
/// `tests/embed/webrtc` has real peers.
fn a_malformed_offer_is_turned_down(c: &Coordinator, hash: &str) {
    use idlecore_protocol::*;
    let bytes = std::fs::read(Paths::workspace().tasks.join("wasi-probe.wasm")).unwrap();
    let uploaded = c.api().request("POST", "/api/modules", Some(&format!("Bearer {}", c.token)), bytes).unwrap();
    assert_eq!(uploaded.body["hash"], hash);
    let blob: Sha256Hash = uploaded.body["runnable"].as_str().unwrap().parse().unwrap();
    let (mut asker, _) = idlecore_e2e::ProtoWorker::join(c.addr, 0).unwrap();
    asker.send(&WorkerMessage::Want(Want { blob })).unwrap();
    let next = |w: &mut idlecore_e2e::ProtoWorker| match w.recv().unwrap() {
        idlecore_e2e::proto_worker::Received::Msg(m) => m,
        closed => panic!("{closed:?}"),
    };
    let CoordinatorMessage::Sources(sources) = next(&mut asker) else { panic!("Sources") };
    let [visitor] = sources.peers[..] else { panic!("the visitor holds it: {sources:?}") };
    asker.send(&WorkerMessage::Signal(Signal { peer: visitor, payload: SignalPayload::Offer("v=0".into()) })).unwrap();
    assert_eq!(next(&mut asker), CoordinatorMessage::Signal(Signal { peer: visitor, payload: SignalPayload::Close }));
}

#[test]
fn a_visitor_advertises_its_executors_plus_prefetched_leases() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(
        www.join("index.html"),
        r#"<!doctype html><script src="/pkg/idlecore.js" data-coordinator="/ws" data-consent="granted" data-cpu="1" data-max-workers="2" data-prefetch="3"></script>"#,
    )
    .unwrap();
    let c = start_site(&dir.path().join("data"), &paths, None, &www, &paths.pkg);
    let _v = Visitor::open(&format!("{}/", c.base_url())).unwrap();
    let api = c.api();
    wait_for("the visitor to join", Duration::from_secs(60), || (workers(&api) >= 1).then_some(())).unwrap();
    assert_eq!(api.stats().unwrap()["slots"], 5, "2 executors and 3 prefetched leases");
}

/// Inputs as blobs: a 1 MiB file uploaded once and named by six tasks, and
/// a 300 KiB inline stdin the coordinator turns into a blob. Each visitor
/// fetches a blob once, however many of its tasks name it, and the tasks
/// see the same bytes as inline inputs.
#[test]
fn large_inputs_travel_as_blobs_fetched_once_per_visitor() {
    let s = setup(2);
    let (api, hash) = (s.c.api(), s.upload("wasi-probe.wasm"));
    let text: String = (0..1024 * 1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let blob = api.upload_blob(text.as_bytes()).unwrap();
    let stdin: String = (0..300 * 1024).map(|i| (b'0' + (i % 10) as u8) as char).collect();
    let mut tasks: Vec<serde_json::Value> = (0..6).map(|_| json!({ "args": ["copy"], "file_blobs": { "in.txt": blob } })).collect();
    tasks.push(json!({ "args": ["report"], "stdin": B64.encode(&stdin) }));
    let created = api.post_job(&json!({ "module": hash, "tasks": tasks })).unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let job = created.body["id"].as_u64().unwrap();
    wait_for("the job", Duration::from_secs(90), || (api.status(job).ok()?["state"] == "completed").then_some(())).unwrap();
    let results = api.results_json(job).unwrap();
    let upper = B64.encode(text.to_uppercase());
    for r in &results[..6] {
        assert_eq!(r["status"], "done", "{r}");
        assert_eq!(r["files"]["/output/sub/out.txt"].as_str(), Some(upper.as_str()), "task {}", r["task"]);
    }
    let report = String::from_utf8(B64.decode(results[6]["stdout"].as_str().unwrap()).unwrap()).unwrap();
    assert!(report.contains(&format!("stdin: {stdin}\n")), "the 300 KiB stdin reached the task whole");
    // Six tasks name the 1 MiB file: at most one download per visitor.
    let stats = api.stats().unwrap();
    let served = stats["download_bytes"].as_u64().unwrap();
    // Besides the inputs: the sandboxed module, at most once per visitor.
    let module = 2 * std::fs::read(s.paths.tasks.join("wasi-probe.wasm")).unwrap().len() as u64;
    assert!(served <= 2 * (text.len() + stdin.len()) as u64 + 2 * module, "{served} bytes served: {stats}");
    assert!(served >= (text.len() + stdin.len()) as u64, "{served} bytes served: {stats}");
}
