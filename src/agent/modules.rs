//! Task modules: fetched over HTTP by hash, verified, compiled once per agent.

use idlecore_protocol::{FailureKind, ModuleHash};
use js_sys::{Uint8Array, WebAssembly};
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Response, WorkerGlobalScope};

pub type ModuleError = (FailureKind, String);

fn text(e: wasm_bindgen::JsValue) -> String {
    e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).or_else(|| e.as_string()).unwrap_or_else(|| format!("{e:?}"))
}

/// Downloads `url`, checks its SHA-256 against `expected` and compiles it.
pub async fn fetch(url: String, expected: ModuleHash) -> Result<WebAssembly::Module, ModuleError> {
    let fetch_err = |m: String| (FailureKind::ModuleFetch, m);
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp: Response = JsFuture::from(scope.fetch_with_str(&url))
        .await
        .map_err(|e| fetch_err(format!("fetching {url}: {}", text(e))))?
        .unchecked_into();
    if !resp.ok() {
        return Err(fetch_err(format!("fetching {url}: HTTP {}", resp.status())));
    }
    let buffer = JsFuture::from(resp.array_buffer().map_err(|e| fetch_err(text(e)))?)
        .await
        .map_err(|e| fetch_err(format!("reading {url}: {}", text(e))))?;
    let bytes = Uint8Array::new(&buffer).to_vec();
    let digest: ModuleHash = Sha256::digest(&bytes).into();
    if digest != expected {
        return Err(fetch_err(format!(
            "module from {url} has SHA-256 {}, expected {}",
            hex::encode(digest),
            hex::encode(expected)
        )));
    }
    let module = JsFuture::from(WebAssembly::compile(&buffer))
        .await
        .map_err(|e| (FailureKind::ModuleInvalid, format!("compiling module: {}", text(e))))?;
    Ok(module.unchecked_into())
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
