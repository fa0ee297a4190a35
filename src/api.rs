//! The `#[wasm_bindgen]` surface: entry points of the agent and executor Workers.

use crate::agent;
use crate::page::AgentOptions;
use js_sys::Function;
use wasm_bindgen::prelude::*;

/// Starts the agent in this (dedicated) Worker. `spawn_executor()` must return
/// a new executor Worker. Invalid options are thrown as an `Error` naming the problem.
#[wasm_bindgen]
pub fn agent_main(options: JsValue, spawn_executor: Function) -> Result<(), JsValue> {
    console_error_panic_hook::set_once();
    let opts = AgentOptions::from_js(&options).map_err(|e| js_sys::Error::new(&format!("idlecore: invalid options: {e}")))?;
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = agent::run(opts, spawn_executor).await {
            web_sys::console::error_2(&"idlecore: agent stopped:".into(), &e);
        }
    });
    Ok(())
}

/// Makes this Worker an executor: it runs each job posted to it.
#[wasm_bindgen]
pub fn executor_main() {
    console_error_panic_hook::set_once();
    crate::executor::worker::start();
}
