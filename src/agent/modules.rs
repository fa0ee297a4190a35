//! Task modules: fetched over HTTP by hash, verified, kept across page loads in
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
}

pub type ModuleError = (FailureKind, String);

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

/// Loads the module `expected` from the persistent cache or, failing that,
/// from `url`; checks its SHA-256 either way and compiles it. Returns the
/// module, its size in bytes and where it came from.
pub async fn load(url: String, expected: ModuleHash) -> Result<(WebAssembly::Module, usize, Source), ModuleError> {
    let cache = open_cache().await;
    if let Some(cache) = &cache {
        if let Some(bytes) = cached_bytes(cache, &url).await {
            if digest(&bytes) == expected {
                return Ok((compile(&bytes).await?, bytes.len(), Source::Cache));
            }
            // Damaged or stale: forget it and download again.
            let _ = JsFuture::from(cache.delete_with_str(&url)).await;
        }
    }
    let bytes = download(&url).await?;
    let got = digest(&bytes);
    if got != expected {
        return Err((
            FailureKind::ModuleFetch,
            format!("module from {url} has SHA-256 {}, expected {}", hex::encode(got), hex::encode(expected)),
        ));
    }
    if let Some(cache) = &cache {
        store_bytes(cache, &url, &bytes).await;
    }
    Ok((compile(&bytes).await?, bytes.len(), Source::Network))
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
