//! The floor for function calls, for `cargo xtask bench`: the least a server
//! can do to answer `POST /` by running one module: hyper's HTTP/1 server,
//! the module compiled once and an instance kept per thread (reset between
//! calls, as the coordinator's native slots do), each call run on the thread
//! that read its request, the body as stdin, `?arg=` as arguments and stdout
//! as the answer. No
//! queue, no limits beyond the module's own, no names, no figures.
//!
//! usage: fn_floor MODULE [THREADS]; prints `listening on ADDR` and serves until killed.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use idlecore_native_engine::engine::{runtime, Compiled, Executor, RunLimits};
use idlecore_native_engine::host::Stop;
use idlecore_protocol::Sha256Hash;
use idlecore_wasi_host::WasiCtx;
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    static EXECUTOR: RefCell<Executor> = RefCell::new(Executor::default());
}

fn call(module: &Compiled, args: &[String], stdin: Vec<u8>) -> Response<Full<Bytes>> {
    let ctx = WasiCtx::new("fn.wasm", args, &[], stdin, 1, 6 << 20);
    let limits = RunLimits { fuel: 0, max_memory_pages: 4096 };
    let run = EXECUTOR.with(|e| e.borrow_mut().run(module, ctx, limits, &Stop::default()));
    match run {
        Ok(out) => Response::new(Full::new(Bytes::from(out.stdout))),
        Err(e) => Response::builder().status(502).body(Full::new(Bytes::from(format!("{e:?}")))).expect("a response"),
    }
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let [module, rest @ ..] = &argv[..] else { anyhow::bail!("usage: fn_floor MODULE [THREADS]") };
    let threads: usize = rest.first().map(|t| t.parse()).transpose()?.unwrap_or(2);
    let wasm = std::fs::read(module)?;
    let compiled = Arc::new(runtime().compile(Sha256Hash::of(&wasm), &wasm).map_err(anyhow::Error::msg)?);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).thread_stack_size(8 << 20).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let compiled = compiled.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let compiled = compiled.clone();
                    async move {
                        // `?arg=A&arg=B`, as the coordinator takes them (no escapes needed here).
                        let args: Vec<String> =
                            req.uri().query().unwrap_or("").split('&').filter_map(|p| p.strip_prefix("arg=")).map(String::from).collect();
                        let body = req.into_body().collect().await?.to_bytes().to_vec();
                        Ok::<_, hyper::Error>(call(&compiled, &args, body))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    })
}
