//! Functions over HTTP: the owner's `PUT/GET/DELETE /api/functions/{name}`
//! and `GET /api/functions`, and the call itself, `POST /fn/{name}`: the body
//! is stdin, each `?arg=` an argument; the answer's body is stdout, with the
//! exit code, where it ran, the time taken and the fuel used in headers. A
//! caller asking for `application/vnd.idlecore.call+json` gets all of it (and
//! stderr) as one JSON object instead.
//!
//! The [`Caller`] extractor settles who may call before the body is read: a
//! public function anyone, any other the owner's token.

use super::error::HttpError;
use super::{HttpResult, Owner};
use crate::domain::functions::DeployRequest;
use crate::net::Edge;
use crate::services::functions::{self, CallAnswer, CallOutcome, FunctionInfo};
use crate::services::ServiceError;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use std::sync::Arc;
use std::time::Instant;

/// The media type of a call's answer as one JSON object.
pub const CALL_JSON: &str = "application/vnd.idlecore.call+json";

pub const EXIT_CODE: HeaderName = HeaderName::from_static("idlecore-exit-code");
pub const SERVED_BY: HeaderName = HeaderName::from_static("idlecore-served-by");
pub const ELAPSED_MS: HeaderName = HeaderName::from_static("idlecore-elapsed-ms");
pub const FUEL_USED: HeaderName = HeaderName::from_static("idlecore-fuel-used");
pub const COLD_START: HeaderName = HeaderName::from_static("idlecore-cold-start");
pub const FAILURE: HeaderName = HeaderName::from_static("idlecore-failure");

/// Someone allowed to call the function the path names, when it arrived.
pub struct Caller {
    arrived: Instant,
}

impl FromRequestParts<Arc<Edge>> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, edge: &Arc<Edge>) -> Result<Caller, HttpError> {
        let arrived = Instant::now();
        let Path(name) = Path::<String>::from_request_parts(parts, edge)
            .await
            .map_err(|e| HttpError::Service(ServiceError::BadRequest(e.body_text())))?;
        match edge.services.functions.is_public(&name) {
            None => Err(ServiceError::NotFound(format!("function {name:?}")).into()),
            Some(true) => Ok(Caller { arrived }),
            Some(false) => Owner::from_request_parts(parts, edge).await.map(|_| Caller { arrived }),
        }
    }
}

pub async fn deploy(State(edge): State<Arc<Edge>>, _: Owner, Path(name): Path<String>, body: Bytes) -> HttpResult<Response> {
    let req: DeployRequest =
        serde_json::from_slice(&body).map_err(|e| ServiceError::BadRequest(format!("invalid function deployment: {e}")))?;
    let (new, function) = functions::deploy(&edge.services, &name, req).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(function)).into_response())
}

pub async fn list(State(edge): State<Arc<Edge>>, _: Owner) -> Json<Vec<FunctionInfo>> {
    Json(functions::list(&edge.services))
}

pub async fn info(State(edge): State<Arc<Edge>>, _: Owner, Path(name): Path<String>) -> HttpResult<Json<FunctionInfo>> {
    Ok(Json(functions::info(&edge.services, &name)?))
}

pub async fn remove(State(edge): State<Arc<Edge>>, _: Owner, Path(name): Path<String>) -> HttpResult<StatusCode> {
    functions::remove(&edge.services, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn call(
    State(edge): State<Arc<Edge>>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answered = async {
        let args = args(query.as_deref().unwrap_or(""))?;
        let answer = functions::call(&edge.services, &name, body.to_vec(), args, caller.arrived).await?;
        let as_json = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains(CALL_JSON));
        HttpResult::Ok(if as_json { json_answer(answer) } else { plain_answer(answer) })
    };
    let mut response = answered.await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(super::BodyRead);
    response
}

/// The `arg` parameters in order; any other parameter is refused.
fn args(query: &str) -> HttpResult<Vec<String>> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| ServiceError::BadRequest(format!("invalid query string: {e}")))?;
    pairs
        .into_iter()
        .map(|(k, v)| {
            if k == "arg" {
                Ok(v)
            } else {
                Err(ServiceError::BadRequest(format!("unknown query parameter {k:?}; arguments are given as ?arg=")).into())
            }
        })
        .collect()
}

fn common_headers(answer: &CallAnswer) -> [(HeaderName, HeaderValue); 3] {
    [
        (SERVED_BY, HeaderValue::from_static(answer.served_by.as_str())),
        (ELAPSED_MS, HeaderValue::from_str(&format!("{:.3}", answer.elapsed.as_secs_f64() * 1000.0)).expect("a number")),
        (COLD_START, HeaderValue::from_static(if answer.cold { "true" } else { "false" })),
    ]
}

/// Body = stdout, the rest in headers. A failed function answers 502 with
/// the failure as JSON.
fn plain_answer(answer: CallAnswer) -> Response {
    let common = common_headers(&answer);
    match answer.outcome {
        CallOutcome::Exited { exit_code, stdout, fuel_used, .. } => {
            let headers = [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                (EXIT_CODE, exit_code.into()),
                (FUEL_USED, fuel_used.into()),
            ];
            (StatusCode::OK, common, headers, stdout).into_response()
        }
        CallOutcome::Failed { kind, message } => {
            let body = serde_json::json!({ "error": format!("the function failed: {}: {message}", kind.as_str()), "kind": kind.as_str() });
            let headers =
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json")), (FAILURE, HeaderValue::from_static(kind.as_str()))];
            (StatusCode::BAD_GATEWAY, common, headers, body.to_string()).into_response()
        }
    }
}

/// Everything as one JSON object (stdout and stderr in base64).
fn json_answer(answer: CallAnswer) -> Response {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut v = serde_json::json!({
        "served_by": answer.served_by.as_str(),
        "elapsed_ms": answer.elapsed.as_secs_f64() * 1000.0,
        "cold_start": answer.cold,
    });
    let status = match answer.outcome {
        CallOutcome::Exited { exit_code, stdout, stderr, fuel_used } => {
            v["exit_code"] = exit_code.into();
            v["stdout"] = b64(&stdout).into();
            v["stderr"] = b64(&stderr).into();
            v["fuel_used"] = fuel_used.into();
            StatusCode::OK
        }
        CallOutcome::Failed { kind, message } => {
            v["error"] = format!("the function failed: {}: {message}", kind.as_str()).into();
            v["kind"] = kind.as_str().into();
            StatusCode::BAD_GATEWAY
        }
    };
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(CALL_JSON))], v.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn args_come_in_order_and_nothing_else_is_taken() {
        assert_eq!(super::args("arg=a&arg=b%20c&arg=&arg=%2F").unwrap(), ["a", "b c", "", "/"]);
        assert!(super::args("").unwrap().is_empty());
        assert!(super::args("arg=a&x=1").is_err());
    }
}
