//! Comparator modules: the example comparator (`tests/tasks/numbers-agree`)
//! gives the same verdicts under the coordinator's host as under wasmtime
//! (a real WASI runtime, `wasmtime_run.py`); and a real coordinator accepts
//! honest outputs that differ in their last digits, through it, while
//! colluding and lying protocol clients get no wrong result accepted.

use idlecore_coordinator::domain::model::{FileMap, ResultRecord, TaskStatus};
use idlecore_coordinator::sandbox::comparator::{Comparator, CompareError};
use idlecore_e2e::{Coordinator, CoordinatorConfig, Paths};
use idlecore_protocol::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;

const TOKEN: &str = "comparator-token";

fn comparator_wasm() -> Vec<u8> {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    std::fs::read(paths.tasks.join("numbers-agree.wasm")).expect("numbers-agree.wasm (cargo xtask build)")
}

fn output(stdout: &str, exit: i32, files: &[(&str, &str)]) -> ResultRecord {
    ResultRecord {
        task: 0,
        status: TaskStatus::Done,
        exit_code: Some(exit),
        stdout: stdout.as_bytes().to_vec(),
        stderr: b"not compared".to_vec(),
        elapsed_ms: 1,
        fuel_used: 1,
        files: FileMap(files.iter().map(|(p, d)| (p.to_string(), d.as_bytes().to_vec())).collect()),
        error: None,
    }
}

/// Lays an output out as the comparator interface says: exit, stdout, stderr, files/.
fn lay_out(r: &ResultRecord, dir: &Path) {
    std::fs::write(dir.join("exit"), r.exit_code.unwrap().to_string()).unwrap();
    std::fs::write(dir.join("stdout"), &r.stdout).unwrap();
    std::fs::write(dir.join("stderr"), &r.stderr).unwrap();
    for (path, data) in &r.files.0 {
        let to = dir.join("files").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, data).unwrap();
    }
}

fn wasmtime_verdict(wasm: &Path, a: &ResultRecord, b: &ResultRecord) -> i32 {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    lay_out(a, da.path());
    lay_out(b, db.path());
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("wasmtime_run.py"))
        .arg("--dir")
        .arg(format!("{}::/a", da.path().display()))
        .arg("--dir")
        .arg(format!("{}::/b", db.path().display()))
        .arg(wasm)
        .args(["/a", "/b"])
        .output()
        .unwrap();
    out.status.code().expect("an exit code")
}

#[test]
fn the_example_comparator_decides_alike_here_and_under_wasmtime() {
    let wasm = comparator_wasm();
    let c = Comparator::new(&wasm).unwrap();
    let path = Paths::workspace().tasks.join("numbers-agree.wasm");
    let pi = output("pi 3.14159265358979 n 12", 0, &[("/output/sum.txt", "total 42.0000000001\n")]);
    let cases = [
        ("noise in the last digits", output("pi 3.14159265358981 n 12", 0, &[("/output/sum.txt", "total 42.0")]), 0),
        ("another number", output("pi 3.15 n 12", 0, &[("/output/sum.txt", "total 42")]), 1),
        ("another word", output("tau 3.14159265358979 n 12", 0, &[("/output/sum.txt", "total 42")]), 1),
        ("another exit code", output("pi 3.14159265358979 n 12", 3, &[("/output/sum.txt", "total 42")]), 1),
        ("a file's number", output("pi 3.14159265358979 n 12", 0, &[("/output/sum.txt", "total 43")]), 1),
        ("a file missing", output("pi 3.14159265358979 n 12", 0, &[]), 1),
        ("another file", output("pi 3.14159265358979 n 12", 0, &[("/output/sum.txt", "total 42"), ("/output/x", "")]), 1),
    ];
    for (what, other, expected) in cases {
        let here = match c.agree(&pi, &other) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(CompareError::Exit { code, .. }) => code as i32,
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(here, expected, "{what}");
        assert_eq!(wasmtime_verdict(&path, &pi, &other), here, "{what}: wasmtime decides otherwise");
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// The right numbers, with noise of its own in the last digits.
    Honest(u32),
    /// The same wrong number as every other colluder.
    Colluder,
    /// A wrong number of its own.
    Liar,
}

fn truth(task: u32) -> f64 {
    (task as f64 + 1.0).sqrt() * 1000.0
}

fn answer(kind: Kind, lease: &Lease) -> String {
    let value = match kind {
        Kind::Honest(n) => truth(lease.task) * (1.0 + n as f64 * 1e-12),
        Kind::Colluder => truth(lease.task) * 1.001,
        Kind::Liar => truth(lease.task) * (1.0 + (lease.lease % 97) as f64 * 1e-3),
    };
    format!("root {value:.15}\n")
}

fn post_job(c: &Coordinator, body: serde_json::Value) -> idlecore_e2e::api::Reply {
    c.api().request("POST", "/api/jobs", Some(&format!("Bearer {TOKEN}")), serde_json::to_vec(&body).unwrap()).unwrap()
}

#[test]
fn outputs_that_differ_in_their_last_digits_are_accepted_through_the_comparator_and_cheats_are_not() {
    let paths = Paths::workspace();
    let dir = tempfile::tempdir().unwrap();
    let cfg = CoordinatorConfig {
        bin: &paths.bin,
        data: dir.path(),
        token: Some(TOKEN),
        addr: None,
        site: None,
        heartbeat_ms: 1000,
        extra: &["--replicas", "2"],
    };
    let c = Coordinator::start(&cfg).unwrap();
    let api = c.api();
    let comparator = api.upload(&comparator_wasm()).unwrap();
    let task_module = api.upload(&wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#).unwrap()).unwrap();
    let tasks: Vec<_> = (0..200).map(|_| json!({ "stdin": "" })).collect();

    // A comparator that was never uploaded, or without replicas, is refused with the reason.
    let missing = post_job(&c, json!({ "module": task_module, "tasks": tasks, "validation": { "comparator": "ab".repeat(32) } }));
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert!(missing.body.to_string().contains("validation.comparator"), "{}", missing.body);
    let alone = json!({ "replicas": 1, "max_replicas": 1, "spot_checks": 0.0, "comparator": comparator });
    let alone = post_job(&c, json!({ "module": task_module, "tasks": tasks, "validation": alone }));
    assert_eq!(alone.status, 400, "{}", alone.body);
    let not_a_command = api.upload(&wat::parse_str(r#"(module (memory 1) (func (export "_start")))"#).unwrap()).unwrap();
    let bad = post_job(&c, json!({ "module": task_module, "tasks": tasks, "validation": { "comparator": not_a_command } }));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.to_string().contains("memory"), "{}", bad.body);

    let created = post_job(&c, json!({ "module": task_module, "tasks": tasks, "validation": { "comparator": comparator } }));
    assert_eq!(created.status / 100, 2, "{}", created.body);
    let job = created.body["id"].as_u64().unwrap();
    assert_eq!(api.status(job).unwrap()["validation"]["comparator"], comparator.as_str());

    let kinds: Vec<Kind> = (1..=7).map(Kind::Honest).chain([Kind::Colluder, Kind::Colluder, Kind::Liar]).collect();
    let (finished, sent) = idlecore_e2e::proto_worker::crowd(
        c.addr,
        &kinds,
        |k, l| answer(k, l).into_bytes(),
        || {
            let s = api.status(job).unwrap();
            (s["state"] == "completed").then_some(s)
        },
    );
    let status = finished.unwrap();
    let checks = &status["checks"];
    eprintln!("checks {checks} sent {sent:?}");

    let mut failed = 0;
    for (task, state, stdout, error) in api.results(job).unwrap() {
        if state == "failed" {
            assert!(error.as_deref().unwrap_or("").contains("no quorum"), "task {task}: {error:?}");
            failed += 1;
            continue;
        }
        let text = String::from_utf8(stdout).unwrap();
        let value: f64 = text.trim().strip_prefix("root ").unwrap().parse().unwrap();
        assert!((value / truth(task) - 1.0).abs() < 1e-9, "task {task}: a wrong result was accepted: {text}");
    }
    // Replicas that never agree fail their task (nothing wrong is accepted);
    // with 3 cheaters in 10, a few tasks end so.
    assert!(failed * 10 <= tasks.len(), "{failed} tasks without a quorum");
    assert!(sent.iter().any(|(k, n)| !matches!(k, Kind::Honest(_)) && *n > 0), "the cheaters were given work");
    assert!(checks["disagreements"].as_u64().unwrap() > 0, "{checks}");
    assert_eq!(checks["comparator_errors"], 0, "{checks}");
}

#[test]
fn idlecore_submit_uploads_a_comparator_and_status_names_it() {
    let paths = Paths::workspace();
    let dir = tempfile::tempdir().unwrap();
    let cfg = CoordinatorConfig {
        bin: &paths.bin,
        data: &dir.path().join("data"),
        token: Some(TOKEN),
        addr: None,
        site: None,
        heartbeat_ms: 1000,
        extra: &[],
    };
    let c = Coordinator::start(&cfg).unwrap();
    let module = dir.path().join("task.wasm");
    std::fs::write(&module, wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#).unwrap()).unwrap();
    let inputs = dir.path().join("inputs.txt");
    std::fs::write(&inputs, "1\n2\n").unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(&paths.bin).args(args).args(["--coordinator", &c.base_url(), "--token", TOKEN]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let comparator = paths.tasks.join("numbers-agree.wasm");
    let submitted = cli(&[
        "submit",
        module.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--comparator",
        comparator.to_str().unwrap(),
        "--no-wait",
    ]);
    let job: u64 = submitted.split_whitespace().nth(1).unwrap().trim_end_matches(':').parse().unwrap();
    let status = c.api().status(job).unwrap();
    let hash = status["validation"]["comparator"].as_str().expect("the job names its comparator").to_string();
    assert_eq!(status["validation"]["replicas"], 2, "the default policy, with the comparator: {status}");
    assert!(cli(&["status", &job.to_string()]).contains(&format!("comparator module {hash}")));
}
