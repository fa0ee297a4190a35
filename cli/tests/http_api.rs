//! The job owners' HTTP API against the real coordinator.

mod common;

use idlecore_e2e::{Api, ProtoWorker};
use idlecore_protocol::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read};

#[test]
fn every_job_endpoint_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    for (method, path) in [
        ("POST", "/api/modules"),
        ("POST", "/api/jobs"),
        ("GET", "/api/jobs"),
        ("GET", "/api/jobs/1"),
        ("POST", "/api/jobs/1/cancel"),
        ("GET", "/api/jobs/1/results"),
        ("GET", "/api/jobs/1/results/stream"),
    ] {
        let none = api.request(method, path, None, vec![]).unwrap();
        assert_eq!(none.status, 401, "{method} {path} without a token");
        assert!(none.body["error"].as_str().unwrap().contains("Bearer"));
        let wrong = api.request(method, path, Some("Bearer not-the-token"), vec![]).unwrap();
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
        assert_eq!(wrong.body["error"], "invalid token");
    }
}

#[test]
fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let auth = format!("Bearer {}", common::TOKEN);
    let auth = Some(auth.as_str());

    let r = api.request("POST", "/api/modules", auth, b"\0asm\x02\0\0\0garbage".to_vec()).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body["error"].as_str().unwrap().contains("not a valid WebAssembly module"), "{}", r.body);
    let r = api.request("POST", "/api/modules", auth, vec![]).unwrap();
    assert_eq!(r.status, 400);

    let r = api.request("GET", "/api/jobs/999", auth, vec![]).unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"], "job 999 not found");

    let r = api.request("POST", "/api/jobs", auth, b"{not json".to_vec()).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body["error"].as_str().unwrap().starts_with("invalid job request"));

    let unknown = json!({ "module": "ab".repeat(32), "tasks": [{}] });
    let r = api.request("POST", "/api/jobs", auth, unknown.to_string().into_bytes()).unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body["error"].as_str().unwrap().contains("upload it first"));

    let hash = api.upload(&common::module(9)).unwrap();
    let cases = [
        (json!({ "module": hash, "tasks": [] }), "at least one task"),
        (json!({ "module": "xyz", "tasks": [{}] }), "\"xyz\" is not a SHA-256 hash (64 hex digits)"),
        (json!({ "module": hash, "tasks": [{ "stdin": "%%%" }] }), "invalid base64"),
        (json!({ "module": hash, "tasks": [{}], "limits": { "timeout_ms": 0 } }), "timeout_ms"),
        (json!({ "module": hash, "tasks": [{ "env": [["A=B", "c"]] }] }), "env names"),
        (json!({ "module": hash, "tasks": [{}], "surprise": 1 }), "unknown field"),
    ];
    for (body, expect) in cases {
        let r = api.request("POST", "/api/jobs", auth, body.to_string().into_bytes()).unwrap();
        assert_eq!(r.status, 400, "{body}");
        assert!(r.body["error"].as_str().unwrap().contains(expect), "{body} -> {}", r.body);
    }
    // Nothing of that created a job.
    assert_eq!(api.request("GET", "/api/jobs", auth, vec![]).unwrap().body, json!([]));
}

#[test]
fn oversized_uploads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let auth = format!("Bearer {}", common::TOKEN);
    // As curl sends a large body: `Expect: 100-continue`, and the body only
    // once the server asks for it. The answer comes from the length alone.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(c.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /api/modules HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        65 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    // The coordinator still answers.
    assert!(api.upload(&common::module(1)).is_ok());
}

#[test]
fn modules_are_public_immutable_and_content_addressed() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let bytes = common::module(7);
    let hash = c.api().upload(&bytes).unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(c.api().upload(&bytes).unwrap(), hash, "uploading again is idempotent");
    let resp = reqwest::blocking::get(format!("{}/modules/{hash}", c.base_url())).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/wasm");
    assert!(resp.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(resp.bytes().unwrap().as_ref(), bytes.as_slice());
    let missing = reqwest::blocking::get(format!("{}/modules/{}", c.base_url(), "0".repeat(64))).unwrap();
    assert_eq!(missing.status(), 404);
}

#[test]
fn results_stream_as_they_are_stored_and_cancel_stops_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let hash = api.upload(&common::module(8)).unwrap();
    let job = api.create_job(&hash, &[vec![1], vec![2]], &[], json!({})).unwrap();
    let (mut w, _) = ProtoWorker::join(c.addr, 2).unwrap();
    let first = w.next_lease().unwrap();
    let _second = w.next_lease().unwrap();
    let msg = WorkerMessage::Result(TaskResult {
        lease: first.lease,
        exit_code: 3,
        stdout: b"hi".to_vec(),
        stderr: b"e".to_vec(),
        elapsed_ms: 5,
        fuel_used: 0,
        files: vec![],
    });
    w.send(&msg).unwrap();

    let stream = reqwest::blocking::Client::new()
        .get(format!("{}/api/jobs/{job}/results/stream", c.base_url()))
        .bearer_auth(common::TOKEN)
        .send()
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "application/x-ndjson");
    let mut lines = BufReader::new(stream).lines();
    let line: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(line["task"], first.task);
    assert_eq!(line["exit_code"], 3);
    assert_eq!(line["stdout"], "aGk=");

    let cancelled = api.request("POST", &format!("/api/jobs/{job}/cancel"), Some(&format!("Bearer {}", common::TOKEN)), vec![]).unwrap();
    assert_eq!(cancelled.body["state"], "cancelled");
    // The stream ends with the job; the worker is told to stop the other lease.
    assert!(lines.next().is_none());
    let mut saw_cancel = false;
    while let Ok(idlecore_e2e::proto_worker::Received::Msg(m)) = w.recv() {
        if matches!(m, CoordinatorMessage::Cancel(_)) {
            saw_cancel = true;
            break;
        }
    }
    assert!(saw_cancel);
    assert_eq!(api.status(job).unwrap()["state"], "cancelled");
}

#[test]
fn a_generated_token_is_printed_once_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let first = common::start_with(dir.path(), None, None, 1000);
    let token = first.token.clone();
    assert!(token.starts_with("idc_") && token.len() > 40);
    drop(first);
    let mut db = Vec::new();
    std::fs::File::open(dir.path().join("idlecore.sqlite3")).unwrap().read_to_end(&mut db).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()), "the token itself is not stored");

    // A second start prints no token; the generated one still works.
    let second = std::process::Command::new(common::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env_remove("IDLECORE_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut second = KillOnDrop(second);
    let mut out = BufReader::new(second.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on http://"), "a token line was printed again: {line}");
    let base = line.trim().trim_start_matches("listening on ").to_string();
    let r = Api::new(&base, &token).request("GET", "/api/jobs", Some(&format!("Bearer {token}")), vec![]).unwrap();
    assert_eq!(r.status, 200);
    let r = Api::new(&base, &token).request("GET", "/api/jobs", Some("Bearer idc_wrong"), vec![]).unwrap();
    assert_eq!(r.status, 401);
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_full_coordinator_answers_503_with_retry_after_and_takes_the_job_later() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--max-pending-tasks", "10"]);
    let api = c.api();
    let hash = api.upload(&common::module(9)).unwrap();
    let tasks = |n: usize| json!({ "module": hash, "tasks": vec![json!({ "stdin": "" }); n] }).to_string();
    let post = |body: String| {
        reqwest::blocking::Client::new().post(format!("{}/api/jobs", c.base_url())).bearer_auth(common::TOKEN).body(body).send().unwrap()
    };
    let first = post(tasks(8));
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().unwrap();

    let busy = post(tasks(5));
    assert_eq!(busy.status(), 503, "8 + 5 tasks exceed the 10 held at most");
    assert_eq!(busy.headers()["retry-after"], "10");
    let error = busy.json::<serde_json::Value>().unwrap()["error"].as_str().unwrap().to_string();
    assert!(error.contains("full") && error.contains("retry"), "{error}");

    let too_big = post(tasks(11));
    assert_eq!(too_big.status(), 413, "a job that can never fit is not worth retrying");

    // Once the first job is done, there is room again.
    let (mut w, _) = ProtoWorker::join(c.addr, 4).unwrap();
    for _ in 0..8 {
        let l = w.next_lease().unwrap();
        w.send(&WorkerMessage::Result(TaskResult {
            lease: l.lease,
            exit_code: 0,
            stdout: vec![],
            stderr: vec![],
            elapsed_ms: 1,
            fuel_used: 0,
            files: vec![],
        }))
        .unwrap();
    }
    idlecore_e2e::wait_for("the first job", std::time::Duration::from_secs(10), || {
        (api.status(first["id"].as_u64().unwrap()).unwrap()["state"] == "completed").then_some(())
    })
    .unwrap();
    assert_eq!(post(tasks(5)).status(), 201);
}

#[test]
fn the_package_goes_gzipped_to_browsers_that_accept_it() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    std::fs::create_dir(&pkg).unwrap();
    let script = "export const answer = 42;\n".repeat(200);
    std::fs::write(pkg.join("big.js"), &script).unwrap();
    let gzipped = std::process::Command::new("gzip").args(["-9", "--keep"]).arg(pkg.join("big.js")).status().unwrap();
    assert!(gzipped.success());
    std::fs::write(pkg.join("plain.js"), "export {};\n").unwrap();
    let data = dir.path().join("data");
    let c = common::start_extra(&data, &["--pkg", pkg.to_str().unwrap()]);
    let http = reqwest::blocking::Client::new();
    let get = |path: &str, accept: Option<&str>| {
        let mut req = http.get(format!("{}/pkg/{path}", c.base_url()));
        if let Some(a) = accept {
            req = req.header("Accept-Encoding", a);
        }
        req.send().unwrap()
    };

    let resp = get("big.js", Some("gzip, deflate, br"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert!(resp.headers()["content-type"].to_str().unwrap().contains("javascript"), "the type of the file, not of the .gz");
    assert!(resp.headers()["vary"].to_str().unwrap().to_ascii_lowercase().contains("accept-encoding"), "caches keep both forms apart");
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let body = resp.bytes().unwrap();
    assert_eq!(body.as_ref(), std::fs::read(pkg.join("big.js.gz")).unwrap().as_slice());
    assert!(body.len() * 10 < script.len());

    let resp = get("big.js", None);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-encoding").is_none(), "no gzip for a client that did not ask");
    assert_eq!(resp.text().unwrap(), script);

    let resp = get("plain.js", Some("gzip"));
    assert_eq!(resp.status(), 200, "a file without a .gz is served as it is");
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(get("missing.js", Some("gzip")).status(), 404);
}
