//! Task modules: fetched by hash (over HTTP, or from a peer: see
//! `agent/peers`), verified, kept across page loads in
//! the Cache API (so a returning visitor downloads nothing), and compiled once
//! per agent (the compiled modules live in the agent's [`crate::lru::Lru`]).

use idlecore_protocol::{FailureKind, ModuleHash};
use js_sys::{Uint8Array, WebAssembly};
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, Response, WorkerGlobalScope};

/// The Cache API bucket holding module bytes, keyed by module URL.
pub const CACHE_NAME: &str = "idlecore-modules-v1";

/// Where a module's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Network,
    Cache,
    /// Another visitor's agent, over a data channel.
    Peer,
}

pub type ModuleError = (FailureKind, String);

/// A compiled module, its size in bytes and where its bytes came from.
pub type Loaded = (WebAssembly::Module, usize, Source);

fn text(e: wasm_bindgen::JsValue) -> String {
    e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).or_else(|| e.as_string()).unwrap_or_else(|| format!("{e:?}"))
}

/// Opens the persistent cache; `None` where the Cache API is unavailable.
pub async fn open_cache() -> Option<Cache> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let storage = scope.caches().ok()?;
    JsFuture::from(storage.open(CACHE_NAME)).await.ok()?.dyn_into().ok()
}

/// The bytes stored for `url`, if any.
pub async fn cached_bytes(cache: &Cache, url: &str) -> Option<Vec<u8>> {
    let hit: Response = JsFuture::from(cache.match_with_str(url)).await.ok()?.dyn_into().ok()?;
    let buffer = JsFuture::from(hit.array_buffer().ok()?).await.ok()?;
    Some(Uint8Array::new(&buffer).to_vec())
}

/// Stores `bytes` for `url`; failures (quota, private mode) only cost a later download.
pub async fn store_bytes(cache: &Cache, url: &str, bytes: &[u8]) {
    let body = Uint8Array::from(bytes);
    if let Ok(resp) = Response::new_with_opt_buffer_source(Some(&body)) {
        let _ = JsFuture::from(cache.put_with_str(url, &resp)).await;
    }
}

fn digest(bytes: &[u8]) -> ModuleHash {
    Sha256::digest(bytes).into()
}

async fn compile(bytes: &[u8]) -> Result<WebAssembly::Module, ModuleError> {
    let module = JsFuture::from(WebAssembly::compile(&Uint8Array::from(bytes).into()))
        .await
        .map_err(|e| (FailureKind::ModuleInvalid, format!("compiling module: {}", text(e))))?;
    Ok(module.unchecked_into())
}

/// The module `expected` from the persistent cache, checked and compiled;
/// `None` if the cache does not hold it (or held damaged bytes, now dropped).
pub async fn from_cache(url: &str, expected: ModuleHash) -> Option<Result<Loaded, ModuleError>> {
    let cache = open_cache().await?;
    let bytes = cached_bytes(&cache, url).await?;
    if digest(&bytes) != expected {
        let _ = JsFuture::from(cache.delete_with_str(url)).await;
        return None;
    }
    Some(compile(&bytes).await.map(|m| (m, bytes.len(), Source::Cache)))
}

/// Downloads the module `expected` from the coordinator at `url`, checks its
/// SHA-256, keeps it in the persistent cache and compiles it.
pub async fn from_network(url: &str, expected: ModuleHash) -> Result<Loaded, ModuleError> {
    let bytes = download(url).await?;
    let got = digest(&bytes);
    if got != expected {
        return Err((
            FailureKind::ModuleFetch,
            format!("module from {url} has SHA-256 {}, expected {}", hex::encode(got), hex::encode(expected)),
        ));
    }
    keep(url, &bytes).await;
    Ok((compile(&bytes).await?, bytes.len(), Source::Network))
}

/// A module a peer sent ([`crate::blob_transfer::Fetch`] checked its
/// SHA-256): kept in the persistent cache under its coordinator `url`, compiled.
pub async fn from_peer(url: &str, bytes: Vec<u8>) -> Result<Loaded, ModuleError> {
    keep(url, &bytes).await;
    Ok((compile(&bytes).await?, bytes.len(), Source::Peer))
}

/// Loads the module from the persistent cache or, failing that, from `url`.
pub async fn load(url: &str, expected: ModuleHash) -> Result<Loaded, ModuleError> {
    match from_cache(url, expected).await {
        Some(loaded) => loaded,
        None => from_network(url, expected).await,
    }
}

async fn keep(url: &str, bytes: &[u8]) {
    if let Some(cache) = open_cache().await {
        store_bytes(&cache, url, bytes).await;
    }
}

async fn download(url: &str) -> Result<Vec<u8>, ModuleError> {
    let fetch_err = |m: String| (FailureKind::ModuleFetch, m);
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp: Response = JsFuture::from(scope.fetch_with_str(url))
        .await
        .map_err(|e| fetch_err(format!("fetching {url}: {}", text(e))))?
        .unchecked_into();
    if !resp.ok() {
        return Err(fetch_err(format!("fetching {url}: HTTP {}", resp.status())));
    }
    let buffer = JsFuture::from(resp.array_buffer().map_err(|e| fetch_err(text(e)))?)
        .await
        .map_err(|e| fetch_err(format!("reading {url}: {}", text(e))))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// `ws://host/ws` + `/modules/` + hash → `http://host/modules/<hash>`.
pub fn module_url(coordinator: &str, path: &str, hash: &ModuleHash) -> Result<String, String> {
    let url = web_sys::Url::new(coordinator).map_err(|_| format!("bad coordinator URL {coordinator}"))?;
    let scheme = if url.protocol() == "wss:" { "https:" } else { "http:" };
    url.set_protocol(scheme);
    url.set_pathname(&format!("{path}{}", hex::encode(hash)));
    url.set_search("");
    Ok(url.href())
}
