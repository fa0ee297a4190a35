//! Task inputs as blobs: uploaded or taken out of a job's inline inputs,
//! named by hash in leases, and served to workers by hash.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use idlecore_e2e::ProtoWorker;
use idlecore_protocol::*;
use serde_json::json;
fn sha(bytes: &[u8]) -> Sha256Hash {
    Sha256Hash::of(bytes)
}

fn get(url: &str) -> (u16, Vec<u8>, Option<String>) {
    let r = reqwest::blocking::get(url).unwrap();
    let cache = r.headers().get("cache-control").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), r.bytes().unwrap().to_vec(), cache)
}

#[test]
fn uploaded_blobs_are_served_by_hash_and_named_in_leases() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--max-blob-mib", "1"]);
    let api = c.api();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let hash = api.upload_blob(&data).unwrap();
    assert_eq!(hash, sha(&data).to_hex());
    // The same bytes again: the same blob.
    assert_eq!(api.upload_blob(&data).unwrap(), hash);
    let (status, body, cache) = get(&format!("{}/blobs/{hash}", c.base_url()));
    assert_eq!((status, body == data), (200, true));
    assert!(cache.unwrap().contains("immutable"), "content-addressed blobs are cached for good");

    // Refused: unknown or malformed hashes, no token, too large.
    assert_eq!(get(&format!("{}/blobs/{}", c.base_url(), "ab".repeat(32))).0, 404);
    assert_eq!(get(&format!("{}/blobs/not-hex", c.base_url())).0, 400);
    assert_eq!(api.request("POST", "/api/blobs", None, data.clone()).unwrap().status, 401);
    assert_eq!(api.request("POST", "/api/blobs", Some("Bearer wrong"), data.clone()).unwrap().status, 401);
    let too_large = api.request("POST", "/api/blobs", Some(&format!("Bearer {}", common::TOKEN)), vec![0; 1024 * 1024 + 1]).unwrap();
    assert_eq!(too_large.status, 413);

    let module = api.upload(&common::module(1)).unwrap();
    let job = json!({ "module": module, "tasks": [
        { "stdin_blob": hash, "args": ["a"] },
        { "stdin": B64.encode(b"inline"), "file_blobs": { "data/big.bin": hash } },
    ]});
    let created = api.post_job(&job).unwrap();
    assert_eq!(created.status, 201, "{}", created.body);

    let (mut w, welcome) = ProtoWorker::join(c.addr, 2).unwrap();
    assert_eq!(welcome.blob_path, "/blobs/");
    let mut leases = [w.next_lease().unwrap(), w.next_lease().unwrap()];
    leases.sort_by_key(|l| l.task);
    let blob = |target| vec![InputBlob { hash: sha(&data), size: data.len() as u64, target }];
    assert!(leases[0].stdin.is_empty());
    assert_eq!(leases[0].blobs, blob(BlobTarget::Stdin));
    assert_eq!(leases[1].stdin, b"inline");
    assert_eq!(leases[1].dirs[0].guest, "/input");
    assert_eq!(leases[1].blobs, blob(BlobTarget::File { dir: 0, path: "data/big.bin".into() }));
    // Workers fetch modules from the same place.
    let (status, runnable, _) = get(&format!("{}/blobs/{}", c.base_url(), leases[0].module.to_hex()));
    assert_eq!((status, sha(&runnable)), (200, leases[0].module));
    let stats = api.stats().unwrap();
    assert_eq!(stats["blob_downloads"], 2);
    assert_eq!(stats["download_bytes"], data.len() as u64 + runnable.len() as u64);
}

#[test]
fn jobs_naming_blobs_badly_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let api = c.api();
    let module = api.upload(&common::module(1)).unwrap();
    let hash = api.upload_blob(b"data").unwrap();
    let refused = |tasks: serde_json::Value| {
        let r = api.post_job(&json!({ "module": module, "tasks": tasks })).unwrap();
        (r.status, r.body["error"].as_str().unwrap_or_default().to_string())
    };
    let missing = "cd".repeat(32);
    let (status, why) = refused(json!([{ "stdin_blob": missing }]));
    assert_eq!(status, 404);
    assert!(why.contains(&missing) && why.contains("upload it first"), "{why}");
    let (status, why) = refused(json!([{ "stdin": B64.encode(b"x"), "stdin_blob": hash }]));
    assert_eq!(status, 400);
    assert!(why.contains("not both"), "{why}");
    let (status, why) = refused(json!([{ "stdin_blob": "xyz" }]));
    assert_eq!(status, 400);
    assert!(why.contains("not a hex SHA-256"), "{why}");
    let (status, why) = refused(json!([{ "files": { "a": B64.encode(b"x") }, "file_blobs": { "a": hash } }]));
    assert_eq!(status, 400);
    assert!(why.contains("both `files` and `file_blobs`"), "{why}");
    let (status, why) = refused(json!([{ "file_blobs": { "../a": hash } }]));
    assert_eq!(status, 400);
    assert!(why.contains("must be relative"), "{why}");
    let (status, why) = refused(json!([{ "dirs": [{ "guest": "/d" }], "file_blobs": { "a": hash } }]));
    assert_eq!(status, 400);
    assert!(why.contains("puts blobs in them"), "{why}");
    let many: serde_json::Map<String, serde_json::Value> = (0..=limits::MAX_LEASE_BLOBS).map(|i| (format!("f{i}"), json!(hash))).collect();
    let (status, why) = refused(json!([{ "file_blobs": many }]));
    assert_eq!(status, 400);
    assert!(why.contains(&format!("at most {}", limits::MAX_LEASE_BLOBS)), "{why}");
    // Files must make a tree: no file where another one's directory would be.
    let (status, why) = refused(json!([{ "files": { "a": B64.encode(b"x") }, "file_blobs": { "a/b": hash } }]));
    assert_eq!(status, 400);
    assert!(why.contains("\"a/b\" is inside \"a\", which is a file too"), "{why}");
    // Files in a writable dir come back in the result: over the output limit, no run could succeed.
    let big = api.upload_blob(&vec![1u8; 5000]).unwrap();
    let writable = json!([{ "dirs": [{ "guest": "/w", "writable": true, "file_blobs": { "big": big } }] }]);
    let r = api.post_job(&json!({ "module": module, "tasks": writable, "limits": { "max_output_bytes": 4096 } })).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body["error"].as_str().unwrap().contains("max_output_bytes"), "{}", r.body);
    // Large top-level files beside `dirs` are refused for what was sent, not turned into blobs first.
    let large = B64.encode(vec![0u8; 300 * 1024]);
    let (status, why) = refused(json!([{ "dirs": [{ "guest": "/d" }], "files": { "a": large } }]));
    assert_eq!(status, 400);
    assert!(why.contains("`files` fill the default `/input`"), "{why}");
    // Nothing was created, and the coordinator serves on.
    assert_eq!(api.stats().unwrap()["running_jobs"], 0);
}

#[test]
fn large_inline_inputs_become_blobs_stored_once_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::start_extra(dir.path(), &["--blob-threshold-kib", "64"]);
    let api = c.api();
    let module = api.upload(&common::module(1)).unwrap();
    let shared = vec![42u8; 100 * 1024];
    let tasks: Vec<serde_json::Value> = (0..3)
        .map(|i| json!({ "stdin": B64.encode(&shared), "files": { "small.txt": B64.encode(format!("{i}")), "same.bin": B64.encode(&shared) } }))
        .collect();
    let created = api.post_job(&json!({ "module": module, "tasks": tasks })).unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let addr = c.addr;
    c.terminate(std::time::Duration::from_secs(10)).unwrap();
    drop(c);
    let c = common::start_with(dir.path(), Some(common::TOKEN), Some(addr), 1000);

    let (mut w, _) = ProtoWorker::join(c.addr, 3).unwrap();
    for _ in 0..3 {
        let l = w.next_lease().unwrap();
        assert!(l.stdin.is_empty(), "100 KiB of stdin is past the 64 KiB threshold");
        let expect = |target| InputBlob { hash: sha(&shared), size: shared.len() as u64, target };
        assert_eq!(l.blobs, [expect(BlobTarget::Stdin), expect(BlobTarget::File { dir: 0, path: "same.bin".into() })]);
        let inline: Vec<&str> = l.dirs[0].files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(inline, ["small.txt"], "small files stay in the lease");
    }
    let (status, body, _) = get(&format!("{}/blobs/{}", c.base_url(), sha(&shared).to_hex()));
    assert_eq!((status, body == shared), (200, true));
    let db = rusqlite::Connection::open(dir.path().join("idlecore.sqlite3")).unwrap();
    let stored: i64 = db.query_row("SELECT COUNT(*) FROM blobs", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 1, "six copies of the same bytes are one blob");
}
