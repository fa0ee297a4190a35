//! Blob loading, in a dedicated Worker (where the agent runs): a cached
//! module loads without the network, a damaged entry is dropped, a module a
//! peer sent is kept (an input is not), and blob URLs follow the
//! coordinator's origin.

#![cfg(target_arch = "wasm32")]

use idlecore_protocol::FailureKind;
use idlecore_protocol::Sha256Hash;
use idlecore_wasm::agent::blobs::{cached_bytes, from_cache, from_peer, load, open_cache, store_bytes, Blob, Kind, Source};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const PROBE: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/target/wasm32-wasip1/release/wasi-probe.wasm"));

/// A URL on the test server's origin that the server does not serve.
fn url(name: &str) -> String {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    format!("{}/idlecore-module-cache-test/{name}", scope.location().origin())
}

#[wasm_bindgen_test]
async fn a_cached_module_loads_without_the_network() {
    let cache = open_cache().await.expect("the Cache API is available in a worker");
    let hash = Sha256Hash::of(PROBE);
    let u = url("cached");
    store_bytes(&cache, &u, PROBE).await;
    let (_module, size, source) = load(&u, hash, Kind::Module, u64::MAX).await.expect("loads from the cache");
    assert_eq!((size, source), (PROBE.len(), Source::Cache));
}

#[wasm_bindgen_test]
async fn a_damaged_entry_is_dropped_and_the_network_tried() {
    let cache = open_cache().await.unwrap();
    let hash = Sha256Hash::of(PROBE);
    let u = url("damaged");
    store_bytes(&cache, &u, b"not the module").await;
    let err = load(&u, hash, Kind::Module, u64::MAX).await.expect_err("the network has no such module");
    assert_eq!(err.0, FailureKind::ModuleFetch);
    assert!(err.1.contains("HTTP 404"), "{}", err.1);
    assert!(cached_bytes(&cache, &u).await.is_none(), "the damaged entry is gone");
}

#[wasm_bindgen_test]
async fn invalid_module_bytes_fail_to_compile_even_with_a_matching_hash() {
    let cache = open_cache().await.unwrap();
    let bytes = b"\0asm\x01\0\0\0\x01\xff";
    let hash = Sha256Hash::of(bytes);
    let u = url("invalid");
    store_bytes(&cache, &u, bytes).await;
    let err = load(&u, hash, Kind::Module, u64::MAX).await.expect_err("does not compile");
    assert_eq!(err.0, FailureKind::ModuleInvalid);
}

#[wasm_bindgen_test]
async fn a_module_from_a_peer_is_kept_for_the_next_visit() {
    let hash = Sha256Hash::of(PROBE);
    let u = url("from-peer");
    assert!(from_cache(&u, hash, Kind::Module).await.is_none(), "not cached yet");
    let (_module, size, source) = from_peer(&u, PROBE.to_vec(), Kind::Module).await.expect("compiles");
    assert_eq!((size, source), (PROBE.len(), Source::Peer));
    let (_module, size, source) = from_cache(&u, hash, Kind::Module).await.expect("cached now").expect("compiles");
    assert_eq!((size, source), (PROBE.len(), Source::Cache));
}

#[wasm_bindgen_test]
fn module_urls_follow_the_coordinator_origin() {
    use idlecore_wasm::agent::blobs::blob_url;
    let hash = Sha256Hash([0xab; 32]);
    let hex = "ab".repeat(32);
    assert_eq!(blob_url("ws://127.0.0.1:8080/ws", "/blobs/", &hash).unwrap(), format!("http://127.0.0.1:8080/blobs/{hex}"));
    assert_eq!(blob_url("wss://example.org/idle/ws?x=1", "/blobs/", &hash).unwrap(), format!("https://example.org/blobs/{hex}"));
    assert!(blob_url("not a url", "/blobs/", &hash).is_err());
}

#[wasm_bindgen_test]
async fn an_input_from_a_peer_is_held_in_memory_not_kept() {
    let bytes = b"an input".to_vec();
    let hash = Sha256Hash::of(&bytes);
    let u = url("input-from-peer");
    let (blob, size, source) = from_peer(&u, bytes.clone(), Kind::Input).await.expect("inputs need no compiling");
    assert_eq!((size, source), (bytes.len(), Source::Peer));
    let Blob::Input(held) = blob else { panic!("an input stays bytes") };
    assert_eq!(held.to_vec(), bytes);
    let cache = open_cache().await.unwrap();
    assert!(cached_bytes(&cache, &u).await.is_none(), "inputs are not written to the visitor's disk");
    assert!(from_cache(&u, hash, Kind::Input).await.is_none());
    // Over the network, a failure is an input's failure.
    let err = load(&url("no-such-input"), hash, Kind::Input, u64::MAX).await.expect_err("404");
    assert_eq!(err.0, FailureKind::InputFetch);
}

#[wasm_bindgen_test]
async fn a_download_larger_than_the_lease_allows_is_refused() {
    // This worker's own script: served, and longer than 100 bytes.
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let script = scope.location().href();
    let err = load(&script, Sha256Hash([0; 32]), Kind::Input, 100).await.expect_err("too large");
    assert_eq!(err.0, FailureKind::InputFetch);
    assert!(err.1.contains("more than the 100 expected"), "{}", err.1);
}
