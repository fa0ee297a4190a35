//! Result validation end to end: a real coordinator at its default validation
//! settings, and real protocol clients over WebSockets, some of which return
//! wrong outputs (colluding: the same wrong output for a task; or each its
//! own). No wrong result may be accepted.

mod common;

use idlecore_e2e::ProtoWorker;
use idlecore_protocol::*;
use serde_json::json;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Honest,
    /// Every colluder returns the same wrong output for a task.
    Colluder,
    /// A wrong output of its own each time.
    Liar,
}

fn right(stdin: &[u8]) -> Vec<u8> {
    Sha256Hash::of(stdin).to_hex().into_bytes()
}

fn answer(kind: Kind, lease: &Lease) -> Vec<u8> {
    match kind {
        Kind::Honest => right(&lease.stdin),
        Kind::Colluder => format!("colluders say {}", lease.task).into_bytes(),
        Kind::Liar => format!("liar {} says {}", lease.lease, lease.task).into_bytes(),
    }
}

#[test]
fn cheating_workers_get_no_wrong_result_accepted_at_the_default_settings() {
    let dir = tempfile::tempdir().unwrap();
    // `--replicas 2` is the default: it only tells the test harness not to
    // turn validation off.
    let c = common::start_extra(dir.path(), &["--replicas", "2"]);
    let api = c.api();
    let hash = api.upload(&common::module(9)).unwrap();
    let stdins: Vec<Vec<u8>> = (0..400u32).map(|i| format!("input {i}").into_bytes()).collect();
    let job = api.create_job(&hash, &stdins, &[], json!({})).unwrap();
    let status = api.status(job).unwrap();
    let defaults = serde_json::to_value(idlecore_coordinator::domain::policy::Policy::default()).unwrap();
    assert_eq!(status["validation"], defaults, "the job runs at the default settings");

    let kinds = [[Kind::Honest; 7].as_slice(), &[Kind::Colluder, Kind::Colluder, Kind::Liar]].concat();
    let (finished, sent) = idlecore_e2e::proto_worker::crowd(c.addr, &kinds, answer, || {
        let s = api.status(job).unwrap();
        (s["state"] == "completed").then_some(s)
    });
    let status = finished.unwrap();

    let results = api.results(job).unwrap();
    assert_eq!(results.len(), stdins.len());
    let mut inconclusive = 0;
    for (task, state, stdout, error) in &results {
        if state == "failed" {
            // Replicas that never agreed fail the task: nothing was accepted.
            assert!(error.as_deref().unwrap_or("").contains("no quorum"), "task {task}: {error:?}");
            inconclusive += 1;
            continue;
        }
        assert_eq!(stdout, &right(&stdins[*task as usize]), "task {task}: a wrong result was accepted");
    }
    assert!(inconclusive * 20 <= results.len(), "{inconclusive} tasks without a quorum");
    let cheats: u32 = sent.iter().filter(|(k, _)| *k != Kind::Honest).map(|(_, n)| n).sum();
    assert!(cheats > 0, "the cheaters were given work");
    let checks = &status["checks"];
    eprintln!("checks {checks} sent {:?}", sent.iter().map(|(_, n)| n).collect::<Vec<_>>());
    assert!(checks["disagreements"].as_u64().unwrap() > 0, "{checks}");
    let overhead = checks["overhead"].as_f64().unwrap();
    assert!(overhead >= 1.0, "{checks}");
    let runs: u32 = sent.iter().map(|(_, n)| n).sum();
    assert!(checks["results"].as_u64().unwrap() <= runs as u64, "results counted are results sent: {checks} vs {runs}");

    // `idlecore status` shows the same figures.
    let out = std::process::Command::new(common::bin())
        .args(["status", &job.to_string(), "--coordinator", &c.base_url(), "--token", common::TOKEN])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("validation: 2 replicas") && text.contains("x compute per task"), "{text}");
}

#[test]
fn a_job_can_turn_validation_off_and_bad_policies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--replicas", "2"]);
    let api = c.api();
    let hash = api.upload(&common::module(8)).unwrap();
    let body = |validation: serde_json::Value| {
        serde_json::to_vec(&json!({ "module": hash, "tasks": [{ "stdin": "" }], "validation": validation })).unwrap()
    };
    let bad = api.request("POST", "/api/jobs", Some(&format!("Bearer {}", common::TOKEN)), body(json!({ "replicas": 0 }))).unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.body.to_string().contains("replicas"), "{}", bad.body);
    let unknown = api.request("POST", "/api/jobs", Some(&format!("Bearer {}", common::TOKEN)), body(json!({ "quorum": 3 }))).unwrap();
    assert_eq!(unknown.status, 400, "{}", unknown.body);

    let off = json!({ "replicas": 1, "max_replicas": 1, "spot_checks": 0.0 });
    let r = api.request("POST", "/api/jobs", Some(&format!("Bearer {}", common::TOKEN)), body(off)).unwrap();
    assert!(r.status / 100 == 2, "{}", r.body);
    let job = r.body["id"].as_u64().unwrap();
    // One worker alone completes it: nothing to compare with, nothing waited for.
    let (mut w, _) = ProtoWorker::join(c.addr, 1).unwrap();
    let l = w.next_lease().unwrap();
    w.report(&common::result(l.lease, b"x")).unwrap();
    let s = idlecore_e2e::wait_for("completion", Duration::from_secs(10), || {
        let s = api.status(job).unwrap();
        (s["state"] == "completed").then_some(s)
    })
    .unwrap();
    assert!(s.get("checks").is_none(), "no figures for a job without validation: {s}");
}
