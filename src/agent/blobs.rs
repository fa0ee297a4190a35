//! Blobs the agent fetches by hash: task modules and task inputs. Either
//! comes over HTTP or from a peer (see `agent/peers`) and is verified.
//! Modules are kept across page loads in the Cache API (so a returning
//! visitor downloads nothing) and compiled once per agent (the compiled
//! modules live in the agent core's LRU); inputs are kept in
//! memory only, as they seldom outlive a job.

use idlecore_protocol::{FailureKind, Sha256Hash};
use js_sys::{Uint8Array, WebAssembly};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, Response, WorkerGlobalScope};

/// The Cache API bucket holding module bytes, keyed by blob URL.
pub const CACHE_NAME: &str = "idlecore-modules-v2";
/// The bucket of earlier versions (keyed by `/modules/` URLs): deleted.
const OLD_CACHE_NAME: &str = "idlecore-modules-v1";

pub use idlecore_agent_core::{Kind, Source};

/// A loaded blob: a compiled module, or an input's bytes (outside the
/// agent's linear memory, which never shrinks).
pub type Blob = idlecore_agent_core::Blob<WebAssembly::Module, Uint8Array>;

pub type BlobError = (FailureKind, String);

/// A loaded blob, its size in bytes and where its bytes came from.
pub type Loaded = idlecore_agent_core::Loaded<WebAssembly::Module, Uint8Array>;

fn text(e: wasm_bindgen::JsValue) -> String {
    e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).or_else(|| e.as_string()).unwrap_or_else(|| format!("{e:?}"))
}

/// Opens the persistent cache; `None` where the Cache API is unavailable.
pub async fn open_cache() -> Option<Cache> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let storage = scope.caches().ok()?;
    // Its entries are never read again; they only take the origin's quota.
    let _ = storage.delete(OLD_CACHE_NAME);
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

fn digest(bytes: &[u8]) -> Sha256Hash {
    Sha256Hash::of(bytes)
}

async fn compile(bytes: &[u8]) -> Result<WebAssembly::Module, BlobError> {
    let module = JsFuture::from(WebAssembly::compile(&Uint8Array::from(bytes).into()))
        .await
        .map_err(|e| (FailureKind::ModuleInvalid, format!("compiling module: {}", text(e))))?;
    Ok(module.unchecked_into())
}

async fn finish(kind: Kind, bytes: Vec<u8>, source: Source) -> Result<Loaded, BlobError> {
    let blob = match kind {
        Kind::Module => Blob::Module(compile(&bytes).await?),
        Kind::Input => Blob::Input(Uint8Array::from(bytes.as_slice())),
    };
    Ok((blob, bytes.len(), source))
}

/// The module `expected` from the persistent cache, checked and compiled;
/// `None` if the cache does not hold it (or held damaged bytes, now dropped),
/// and always for inputs.
pub async fn from_cache(url: &str, expected: Sha256Hash, kind: Kind) -> Option<Result<Loaded, BlobError>> {
    if kind == Kind::Input {
        return None;
    }
    let cache = open_cache().await?;
    let bytes = cached_bytes(&cache, url).await?;
    if digest(&bytes) != expected {
        let _ = JsFuture::from(cache.delete_with_str(url)).await;
        return None;
    }
    Some(finish(kind, bytes, Source::Cache).await)
}

/// Downloads the blob `expected`, of at most `limit` bytes, from the
/// coordinator at `url` and checks its SHA-256 (a module is then kept in the
/// persistent cache and compiled).
pub async fn from_network(url: &str, expected: Sha256Hash, kind: Kind, limit: u64) -> Result<Loaded, BlobError> {
    let bytes = download(url, kind, limit).await?;
    let got = digest(&bytes);
    if got != expected {
        return Err((kind.fetch_failure(), format!("{} from {url} has SHA-256 {}, expected {}", kind.name(), got, expected)));
    }
    from_bytes(url, bytes, kind, Source::Network).await
}

/// A blob a peer sent ([`crate::blob_transfer::Fetch`] checked its
/// SHA-256); a module is kept in the persistent cache under its coordinator `url`.
pub async fn from_peer(url: &str, bytes: Vec<u8>, kind: Kind) -> Result<Loaded, BlobError> {
    from_bytes(url, bytes, kind, Source::Peer).await
}

async fn from_bytes(url: &str, bytes: Vec<u8>, kind: Kind, source: Source) -> Result<Loaded, BlobError> {
    if kind == Kind::Module {
        keep(url, &bytes).await;
    }
    finish(kind, bytes, source).await
}

/// Loads the blob from the persistent cache or, failing that, from `url`
/// (at most `limit` bytes).
pub async fn load(url: &str, expected: Sha256Hash, kind: Kind, limit: u64) -> Result<Loaded, BlobError> {
    match from_cache(url, expected, kind).await {
        Some(loaded) => loaded,
        None => from_network(url, expected, kind, limit).await,
    }
}

async fn keep(url: &str, bytes: &[u8]) {
    if let Some(cache) = open_cache().await {
        store_bytes(&cache, url, bytes).await;
    }
}

/// The body at `url`, refused from its `Content-Length` (before it is read)
/// or its length when larger than `limit`.
async fn download(url: &str, kind: Kind, limit: u64) -> Result<Vec<u8>, BlobError> {
    let fetch_err = |m: String| (kind.fetch_failure(), m);
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp: Response =
        JsFuture::from(scope.fetch_with_str(url)).await.map_err(|e| fetch_err(format!("fetching {url}: {}", text(e))))?.unchecked_into();
    if !resp.ok() {
        return Err(fetch_err(format!("fetching {url}: HTTP {}", resp.status())));
    }
    let too_large = |n: u64| fetch_err(format!("{url} is {n} bytes, more than the {limit} expected"));
    let declared = resp.headers().get("content-length").ok().flatten().and_then(|l| l.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        return Err(too_large(n));
    }
    let buffer = JsFuture::from(resp.array_buffer().map_err(|e| fetch_err(text(e)))?)
        .await
        .map_err(|e| fetch_err(format!("reading {url}: {}", text(e))))?;
    let body = Uint8Array::new(&buffer);
    if body.length() as u64 > limit {
        return Err(too_large(body.length() as u64));
    }
    Ok(body.to_vec())
}

/// `ws://host/ws` + `/blobs/` + hash → `http://host/blobs/<hash>`.
pub fn blob_url(coordinator: &str, path: &str, hash: &Sha256Hash) -> Result<String, String> {
    let url = web_sys::Url::new(coordinator).map_err(|_| format!("bad coordinator URL {coordinator}"))?;
    let scheme = if url.protocol() == "wss:" { "https:" } else { "http:" };
    url.set_protocol(scheme);
    url.set_pathname(&format!("{path}{hash}"));
    url.set_search("");
    Ok(url.href())
}
