//! HTTP routes: the job owners' JSON API (each handler takes an [`Owner`],
//! so the token is checked before any body is read), function calls
//! (`functions`), content-addressed
//! downloads, the worker endpoints, and the demo site and package. Handlers
//! are thin: they call a service and shape its answer.

mod auth;
mod error;
pub mod functions;
mod results;

pub use auth::Owner;
pub use error::HttpError;

use super::client::Visitor;
use super::sessions;
use super::Edge;
use crate::domain::model::{JobRequest, JobStatus, ResultRecord};
use crate::services::{blobs, jobs, ServiceError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use idlecore_protocol::Sha256Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::timeout::RequestBodyTimeoutLayer;

type HttpResult<T> = Result<T, HttpError>;

/// A function deployment's JSON (its environment is at most 128 KiB).
const MAX_DEPLOY_BYTES: usize = 1 << 20;

pub fn router(edge: Arc<Edge>) -> Router {
    let cfg = &edge.config;
    // A body over the limit is refused from its `Content-Length`, at once,
    // before a byte of it is read (and before the token is checked).
    let at_most = |n: usize| (RequestBodyLimitLayer::new(n), DefaultBodyLimit::max(n));
    let api = Router::new()
        .route("/api/modules", post(upload_module).layer(at_most(cfg.max_module_bytes)))
        .route("/api/blobs", post(upload_blob).layer(at_most(cfg.max_blob_bytes)))
        .route("/api/jobs", post(create_job).get(list_jobs).layer(at_most(cfg.max_job_bytes)))
        .route("/api/jobs/{id}", get(job_status))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/results", get(results::list))
        .route("/api/jobs/{id}/results/stream", get(results::stream))
        .route("/api/functions", get(functions::list))
        .route(
            "/api/functions/{name}",
            put(functions::deploy).get(functions::info).delete(functions::remove).layer(at_most(MAX_DEPLOY_BYTES)),
        )
        .route("/fn/{name}", post(functions::call).layer(at_most(cfg.max_call_bytes)))
        .route("/api/stats", get(stats))
        .route("/modules/{hash}", get(get_module))
        .route("/blobs/{hash}", get(get_blob))
        .route("/ws", get(worker_socket));
    #[cfg(feature = "webrtc")]
    let api = api.route("/rtc", post(super::rtc::offer).layer(DefaultBodyLimit::max(idlecore_protocol::limits::MAX_SDP_BYTES)));
    // A body that stops arriving (sent a byte at a time, or not at all) ends
    // the request instead of holding it open.
    let mut app = api.layer(RequestBodyTimeoutLayer::new(cfg.request_timeout)).layer(axum::middleware::from_fn(close_after_refusal));
    if let Some(pkg) = &cfg.pkg {
        // Pages on other origins may load the package from here as from a CDN
        // (module scripts and the wasm are CORS fetches).
        let cors = tower_http::set_header::SetResponseHeaderLayer::overriding(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::HeaderValue::from_static("*"),
        );
        app = app.nest_service(
            "/pkg",
            tower::ServiceBuilder::new().layer(cors).layer(varies_by_encoding()).service(ServeDir::new(pkg).precompressed_gzip()),
        );
    }
    if let Some(www) = &cfg.www {
        app =
            app.fallback_service(tower::ServiceBuilder::new().layer(varies_by_encoding()).service(ServeDir::new(www).precompressed_gzip()));
    }
    app.with_state(edge)
}

/// A request refused before its body was read (a wrong token, a body over
/// its limit) leaves the rest of that body on the connection, so the
/// connection closes after the answer. Saying so in the answer keeps a client
/// from sending its next request down a connection that is about to close.
async fn close_after_refusal(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let headers = request.headers();
    let has_body =
        headers.contains_key(header::TRANSFER_ENCODING) || headers.get(header::CONTENT_LENGTH).is_some_and(|n| n.as_bytes() != b"0");
    let mut response = next.run(request).await;
    let refused = response.status().is_client_error() || response.status().is_server_error();
    if has_body && refused && response.extensions().get::<BodyRead>().is_none() {
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    response
}

/// Marks an answer given after the whole body was read (a function call
/// that failed, or was refused after its body arrived): the connection can
/// carry the client's next request.
#[derive(Clone, Copy)]
struct BodyRead;

/// Static files go gzipped (from `NAME.gz` beside them, which `cargo xtask
/// build` writes) to clients that accept gzip: caches must keep the two apart.
fn varies_by_encoding() -> tower_http::set_header::SetResponseHeaderLayer<header::HeaderValue> {
    tower_http::set_header::SetResponseHeaderLayer::if_not_present(header::VARY, header::HeaderValue::from_static("accept-encoding"))
}

/// A hash in a path: hex, with `.wasm` allowed after a module's.
fn path_hash(text: &str) -> HttpResult<Sha256Hash> {
    text.parse().map_err(|e| ServiceError::BadRequest(format!("{text:?} is {e}")).into())
}

async fn upload_module(State(edge): State<Arc<Edge>>, _: Owner, body: Bytes) -> HttpResult<Response> {
    let uploaded = blobs::put_module(&edge.services, body.to_vec()).await?;
    Ok((StatusCode::CREATED, Json(uploaded)).into_response())
}

async fn upload_blob(State(edge): State<Arc<Edge>>, _: Owner, body: Bytes) -> HttpResult<Response> {
    let blob = blobs::put_blob(&edge.services, body.to_vec()).await?;
    Ok((StatusCode::CREATED, Json(blob)).into_response())
}

async fn get_module(State(edge): State<Arc<Edge>>, Path(hash): Path<String>) -> HttpResult<Response> {
    let hash = path_hash(hash.trim_end_matches(".wasm"))?;
    Ok(content_addressed(hash, "application/wasm", blobs::module(&edge.services, hash).await?))
}

/// Any blob workers fetch by hash: a task input or a module.
async fn get_blob(State(edge): State<Arc<Edge>>, Path(hash): Path<String>) -> HttpResult<Response> {
    let hash = path_hash(&hash)?;
    Ok(content_addressed(hash, "application/octet-stream", blobs::blob(&edge.services, hash).await?))
}

fn content_addressed(hash: Sha256Hash, content_type: &'static str, bytes: Vec<u8>) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type.to_string()),
        // Content-addressed: a hash never names other bytes.
        (header::CACHE_CONTROL, "public, max-age=31536000, immutable".to_string()),
        (header::ETAG, format!("\"{hash}\"")),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_string()),
    ];
    (headers, bytes).into_response()
}

async fn create_job(State(edge): State<Arc<Edge>>, _: Owner, body: Bytes) -> HttpResult<Response> {
    let req: JobRequest = serde_json::from_slice(&body).map_err(|e| ServiceError::BadRequest(format!("invalid job request: {e}")))?;
    let tasks = req.tasks.len();
    let id = jobs::create(&edge.services, req).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id, "tasks": tasks }))).into_response())
}

async fn list_jobs(State(edge): State<Arc<Edge>>, _: Owner) -> HttpResult<Json<Vec<JobStatus>>> {
    Ok(Json(jobs::list(&edge.services).await?))
}

async fn job_status(State(edge): State<Arc<Edge>>, _: Owner, Path(id): Path<u64>) -> HttpResult<Json<JobStatus>> {
    Ok(Json(jobs::status(&edge.services, id).await?))
}

async fn cancel_job(State(edge): State<Arc<Edge>>, _: Owner, Path(id): Path<u64>) -> HttpResult<Json<JobStatus>> {
    Ok(Json(jobs::cancel(&edge.services, id).await?))
}

async fn stats(State(edge): State<Arc<Edge>>) -> Json<serde_json::Value> {
    let (scheduler, peers, (blobs, holders)) = edge.services.stats();
    let egress = &edge.services.egress;
    let mut v = serde_json::to_value(scheduler).expect("stats serialize");
    v["module_downloads"] = egress.module_downloads.load(Ordering::Relaxed).into();
    v["blob_downloads"] = egress.blob_downloads.load(Ordering::Relaxed).into();
    v["download_bytes"] = egress.download_bytes.load(Ordering::Relaxed).into();
    v["peers"] = serde_json::to_value(peers).expect("stats serialize");
    v["peers"]["blobs"] = blobs.into();
    v["peers"]["holders"] = holders.into();
    let (websocket, data_channel) = edge.sessions_by_transport();
    v["transports"] = serde_json::json!({ "websocket": websocket, "data_channel": data_channel });
    Json(v)
}

async fn worker_socket(State(edge): State<Arc<Edge>>, visitor: Visitor, req: axum::extract::Request) -> Response {
    super::upgrade::accept(req, move |socket, budget| sessions::run(sessions::Link::WebSocket(socket, budget), edge, visitor))
}

/// A record as one NDJSON line.
fn ndjson_line(r: &ResultRecord) -> Bytes {
    let mut s = serde_json::to_vec(r).expect("record serializes");
    s.push(b'\n');
    Bytes::from(s)
}
