//! HTTP routes: the job owners' JSON API, public module downloads, the worker
//! WebSocket and the demo site.

use crate::error::ApiError;
use crate::jobs;
use crate::model::{JobRequest, JobStatus, ResultRecord};
use crate::sessions;
use crate::state::{AppState, Event};
use crate::store::Write;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tower_http::services::ServeDir;

type AppResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route(
            "/api/modules",
            post(upload_module).layer(DefaultBodyLimit::max(state.config.max_module_bytes)),
        )
        .route(
            "/api/blobs",
            post(upload_blob).layer(DefaultBodyLimit::max(state.config.max_blob_bytes)),
        )
        .route(
            "/api/jobs",
            post(create_job)
                .get(list_jobs)
                .layer(DefaultBodyLimit::max(state.config.max_job_bytes)),
        )
        .route("/api/jobs/{id}", get(job_status))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/results", get(list_results))
        .route("/api/jobs/{id}/results/stream", get(stream_results))
        .route("/api/stats", get(stats))
        .route("/modules/{hash}", get(get_module))
        .route("/blobs/{hash}", get(get_blob))
        .route("/ws", get(worker_socket));
    #[cfg(feature = "webrtc")]
    let api = api.route(
        "/rtc",
        post(crate::rtc::offer).layer(DefaultBodyLimit::max(
            idlecore_protocol::limits::MAX_SDP_BYTES,
        )),
    );
    let mut app = api;
    if let Some(pkg) = &state.config.pkg {
        // Pages on other origins may load the package from here as from a CDN
        // (module scripts and the wasm are CORS fetches).
        let cors = tower_http::set_header::SetResponseHeaderLayer::overriding(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::HeaderValue::from_static("*"),
        );
        app = app.nest_service(
            "/pkg",
            tower::ServiceBuilder::new()
                .layer(cors)
                .layer(varies_by_encoding())
                .service(ServeDir::new(pkg).precompressed_gzip()),
        );
    }
    if let Some(www) = &state.config.www {
        app = app.fallback_service(
            tower::ServiceBuilder::new()
                .layer(varies_by_encoding())
                .service(ServeDir::new(www).precompressed_gzip()),
        );
    }
    app.with_state(state)
}

/// Static files go gzipped (from `NAME.gz` beside them, which `cargo xtask
/// build` writes) to clients that accept gzip: caches must keep the two apart.
fn varies_by_encoding() -> tower_http::set_header::SetResponseHeaderLayer<header::HeaderValue> {
    tower_http::set_header::SetResponseHeaderLayer::if_not_present(
        header::VARY,
        header::HeaderValue::from_static("accept-encoding"),
    )
}

fn auth(state: &AppState, headers: &HeaderMap) -> AppResult<()> {
    crate::auth::check(headers, &state.token_hash)
}

async fn upload_module(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Response> {
    auth(&state, &headers)?;
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "empty body; send the module's bytes".into(),
        ));
    }
    // Instrumenting is CPU work proportional to the module: keep it off the async threads.
    let module = body.clone();
    let sandboxed = tokio::task::spawn_blocking(move || crate::sandbox::instrument(&module))
        .await
        .map_err(|e| ApiError::BadRequest(format!("module check failed: {e}")))?
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let hash = hex::encode(Sha256::digest(&body));
    let runnable = hex::encode(Sha256::digest(&sandboxed));
    let size = body.len();
    let sandboxed_row = Write::PutModule {
        hash: runnable.clone(),
        bytes: sandboxed,
        runnable: runnable.clone(),
    };
    state.store.write(sandboxed_row).await?;
    state
        .store
        .write(Write::PutModule {
            hash: hash.clone(),
            bytes: body.to_vec(),
            runnable: runnable.clone(),
        })
        .await?;
    tracing::info!(%hash, %runnable, size, "module stored");
    let answer = serde_json::json!({ "hash": hash, "size": size, "runnable": runnable });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// Stores a task input by its SHA-256, for tasks to name in `stdin_blob`
/// and `file_blobs`. Uploading the same bytes again changes nothing.
async fn upload_blob(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Response> {
    auth(&state, &headers)?;
    let hash = hex::encode(Sha256::digest(&body));
    let size = body.len();
    state
        .store
        .write(Write::PutBlob {
            hash: hash.clone(),
            bytes: body.to_vec(),
        })
        .await?;
    tracing::info!(%hash, size, "blob stored");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "hash": hash, "size": size })),
    )
        .into_response())
}

async fn get_module(
    State(state): State<Arc<AppState>>,
    Path(hash): Path<String>,
) -> AppResult<Response> {
    let hash = hex::encode(jobs::parse_hash(hash.trim_end_matches(".wasm"))?);
    let bytes = state
        .store
        .module(&hash)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("module {hash}")))?;
    state
        .module_downloads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(content_addressed(&state, &hash, "application/wasm", bytes))
}

/// Any blob workers fetch by hash: a task input or a module.
async fn get_blob(
    State(state): State<Arc<AppState>>,
    Path(hash): Path<String>,
) -> AppResult<Response> {
    let hash = hex::encode(jobs::parse_hash(&hash)?);
    let bytes = state
        .store
        .blob(&hash)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("blob {hash}")))?;
    state
        .blob_downloads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(content_addressed(
        &state,
        &hash,
        "application/octet-stream",
        bytes,
    ))
}

fn content_addressed(state: &AppState, hash: &str, content_type: &str, bytes: Vec<u8>) -> Response {
    state
        .download_bytes
        .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            // Content-addressed: a hash never names other bytes.
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_string(),
            ),
            (header::ETAG, format!("\"{hash}\"")),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_string()),
        ],
        bytes,
    )
        .into_response()
}

async fn create_job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Response> {
    auth(&state, &headers)?;
    let req: JobRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid job request: {e}")))?;
    let tasks = req.tasks.len();
    let id = jobs::create(&state, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": id, "tasks": tasks })),
    )
        .into_response())
}

async fn list_jobs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> AppResult<Json<Vec<JobStatus>>> {
    auth(&state, &headers)?;
    Ok(Json(jobs::list(&state).await?))
}

async fn job_status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> AppResult<Json<JobStatus>> {
    auth(&state, &headers)?;
    Ok(Json(jobs::status(&state, id).await?))
}

async fn cancel_job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> AppResult<Json<JobStatus>> {
    auth(&state, &headers)?;
    Ok(Json(jobs::cancel(&state, id).await?))
}

#[derive(Deserialize)]
struct Page {
    after: Option<u32>,
    limit: Option<u32>,
}

async fn list_results(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Query(page): Query<Page>,
) -> AppResult<Json<Vec<ResultRecord>>> {
    auth(&state, &headers)?;
    jobs::status(&state, id).await?;
    let limit = page.limit.unwrap_or(1000).clamp(1, 10_000);
    Ok(Json(state.store.results(id, page.after, limit).await?))
}

/// Newline-delimited JSON: every final record so far, then each new one as it
/// is stored; the stream ends when the job ends.
async fn stream_results(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> AppResult<Response> {
    auth(&state, &headers)?;
    jobs::status(&state, id).await?;
    // Subscribe before reading, so nothing stored in between is missed.
    let mut events = state.events.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut sent = std::collections::HashSet::new();
        let ended = |s: &str| s != crate::model::JobState::Running.as_str();
        // Read the state first: a job that ended before this point has all its
        // records in the store; one that ends later announces it as an event.
        let ended_before = jobs::status(&state, id)
            .await
            .map(|s| ended(&s.state))
            .unwrap_or(true);
        if catch_up(&state, id, &mut sent, &tx).await.is_err() || ended_before {
            return;
        }
        loop {
            match events.recv().await {
                Ok(Event::Finished { job, task }) if job == id && !sent.contains(&task) => {
                    if let Ok(Some(r)) = state.store.result(id, task).await {
                        sent.insert(task);
                        if tx.send(Ok(ndjson_line(&r))).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Event::Voided { job, task }) if job == id => {
                    // Decided again: its new record is sent when stored.
                    sent.remove(&task);
                }
                Ok(Event::JobEnded { job }) if job == id => {
                    let _ = catch_up(&state, id, &mut sent, &tx).await;
                    return;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow a reader: catch up from the store.
                    let ended_before = jobs::status(&state, id)
                        .await
                        .map(|s| ended(&s.state))
                        .unwrap_or(true);
                    if catch_up(&state, id, &mut sent, &tx).await.is_err() || ended_before {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn ndjson_line(r: &ResultRecord) -> Bytes {
    let mut s = serde_json::to_vec(r).expect("record serializes");
    s.push(b'\n');
    Bytes::from(s)
}

type LineSender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Sends every stored record not yet sent. Err when the reader has gone.
async fn catch_up(
    state: &AppState,
    id: u64,
    sent: &mut std::collections::HashSet<u32>,
    tx: &LineSender,
) -> Result<(), ()> {
    let mut after = None;
    while let Ok(page) = state.store.results(id, after, 1000).await {
        let Some(last) = page.last() else { break };
        after = Some(last.task);
        for r in &page {
            if !sent.insert(r.task) {
                continue;
            }
            tx.send(Ok(ndjson_line(r))).await.map_err(|_| ())?;
        }
    }
    Ok(())
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let mut v = serde_json::to_value(state.scheduler().stats()).expect("stats serialize");
    let downloads = state
        .module_downloads
        .load(std::sync::atomic::Ordering::Relaxed);
    v["module_downloads"] = downloads.into();
    v["blob_downloads"] = state
        .blob_downloads
        .load(std::sync::atomic::Ordering::Relaxed)
        .into();
    v["download_bytes"] = state
        .download_bytes
        .load(std::sync::atomic::Ordering::Relaxed)
        .into();
    let peers = state.peers();
    let (blobs, holders) = peers.holdings();
    v["peers"] = serde_json::to_value(peers.stats).expect("stats serialize");
    v["peers"]["blobs"] = blobs.into();
    v["peers"]["holders"] = holders.into();
    let (websocket, data_channel) = state.sessions_by_transport();
    v["transports"] = serde_json::json!({ "websocket": websocket, "data_channel": data_channel });
    Json(v)
}

/// `?site=KEY` on the worker socket: which embedding site the visitor came from.
#[derive(serde::Deserialize)]
pub(crate) struct SocketQuery {
    site: Option<String>,
}

/// The embedding site's key ("" if none) and the worker's network (see
/// `sessions::origin_of`), or the answer to a bad site key.
pub(crate) fn worker_site_and_origin(
    query: SocketQuery,
    extensions: &axum::http::Extensions,
) -> Result<(String, Option<u64>), Response> {
    // The peer address, where the server records it (a router served without it has none).
    let peer = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
    let origin = peer.and_then(|p| crate::sessions::origin_of(p.0.ip()));
    let site = query.site.unwrap_or_default();
    if site.len() > 128
        || !site
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        let why = "site key: up to 128 letters, digits, '.', '_' or '-'";
        return Err((
            axum::http::StatusCode::BAD_REQUEST,
            [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
            why,
        )
            .into_response());
    }
    Ok((site, origin))
}

/// Bytes a worker socket reads at a time (see `worker_socket`).
const WS_READ_BUFFER: usize = 4096;

async fn worker_socket(
    State(state): State<Arc<AppState>>,
    Query(query): Query<SocketQuery>,
    extensions: axum::http::Extensions,
    ws: WebSocketUpgrade,
) -> Response {
    let (site, origin) = match worker_site_and_origin(query, &extensions) {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    // Frames a little over the protocol maximum still arrive whole, so the
    // session can answer them with a `TooLarge` error instead of a bare close.
    let limit = idlecore_protocol::MAX_FRAME_BYTES + 64 * 1024;
    // Each socket read zeroes this much of the read buffer first, and it stays
    // resident per connection: the default (128 KiB) made zeroing the largest
    // cost of a small message and an idle worker cost 128 KiB. Larger frames
    // still arrive whole (the buffer grows to fit a frame being read).
    ws.read_buffer_size(WS_READ_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            sessions::run(sessions::Link::WebSocket(socket), state, site, origin)
        })
}
