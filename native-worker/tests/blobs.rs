//! Blobs over HTTP from a server that answers what the test tells it to:
//! the bytes must have their hash and stay within their limit, whatever the
//! server says; modules are kept on disk, and damaged copies are dropped.

use idlecore_agent_core::{Blob, Kind, Source};
use idlecore_native_worker::blobs::{DiskCache, Loader};
use idlecore_protocol::{FailureKind, Sha256Hash};
use std::io::{Read, Write};
use std::net::TcpListener;

/// Serves `body` (with `content_length` in the header) to every request; its base URL.
fn server(body: Vec<u8>, content_length: Option<usize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let length = content_length.map(|n| format!("Content-Length: {n}\r\n")).unwrap_or_default();
            let _ = s.write_all(format!("HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n").as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}/blobs/x")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

const MODULE: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

#[test]
fn bytes_must_have_their_hash_and_fit_their_limit() {
    let rt = runtime();
    let loader = Loader::new(reqwest::Client::new(), None);
    let data = b"input bytes".to_vec();
    let hash = Sha256Hash::of(&data);
    let load = |url: String, hash, limit| rt.block_on(loader.load(url, hash, Kind::Input, limit));

    let (blob, size, source) = load(server(data.clone(), Some(data.len())), hash, 100).unwrap();
    assert!(matches!(blob, Blob::Input(b) if *b == data));
    assert_eq!((size, source), (data.len(), Source::Network));

    let Err((kind, why)) = load(server(b"other bytes".to_vec(), Some(11)), hash, 100) else { panic!("other bytes taken") };
    assert_eq!(kind, FailureKind::InputFetch);
    assert!(why.contains("do not have its hash"), "{why}");

    let Err((_, why)) = load(server(data.clone(), Some(data.len())), hash, 5) else { panic!("past the limit") };
    assert!(why.contains("more than the 5"), "{why}");
    // No length in the header: counted while it arrives.
    let Err((_, why)) = load(server(vec![7; 100_000], None), Sha256Hash::of(&[7; 100_000]), 1000) else { panic!("past the limit") };
    assert!(why.contains("sent more than the 1000"), "{why}");
}

#[test]
fn modules_are_compiled_kept_on_disk_and_damaged_copies_dropped() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(dir.path().join("modules"), 1 << 20).unwrap();
    let loader = Loader::new(reqwest::Client::new(), Some(cache.clone()));
    let module = wat::parse_str(MODULE).unwrap();
    let hash = Sha256Hash::of(&module);
    let url = server(module.clone(), Some(module.len()));
    let (blob, _, source) = rt.block_on(loader.load(url, hash, Kind::Module, 1 << 20)).unwrap();
    assert!(matches!(blob, Blob::Module(m) if m.hash == hash));
    assert_eq!(source, Source::Network);
    // From disk now, with no server behind the URL.
    let (_, _, source) = rt.block_on(loader.load("http://127.0.0.1:9/none".into(), hash, Kind::Module, 1 << 20)).unwrap();
    assert_eq!(source, Source::Cache);
    // A damaged copy is dropped, not run.
    std::fs::write(dir.path().join(format!("modules/{hash}.wasm")), b"damaged").unwrap();
    assert_eq!(cache.get(hash), None);
    assert!(!dir.path().join(format!("modules/{hash}.wasm")).exists());

    // Bytes with the right hash that are no module: `module_invalid`.
    let garbage = b"\0asm\x01\0\0\0\x01".to_vec();
    let url = server(garbage.clone(), Some(garbage.len()));
    let Err((kind, _)) = rt.block_on(loader.load(url, Sha256Hash::of(&garbage), Kind::Module, 1 << 20)) else { panic!("garbage compiled") };
    assert_eq!(kind, FailureKind::ModuleInvalid);
}

#[test]
fn the_disk_cache_keeps_to_its_budget_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(dir.path().to_path_buf(), 2500).unwrap();
    let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000]).collect();
    let hashes: Vec<Sha256Hash> = blobs.iter().map(|b| Sha256Hash::of(b)).collect();
    cache.put(hashes[0], &blobs[0]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    cache.put(hashes[1], &blobs[1]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(cache.get(hashes[0]).is_some(), "used again: now the most recent");
    std::thread::sleep(std::time::Duration::from_millis(20));
    cache.put(hashes[2], &blobs[2]);
    assert!(cache.get(hashes[0]).is_some() && cache.get(hashes[2]).is_some());
    assert_eq!(cache.get(hashes[1]), None, "the least recently used went");
}
