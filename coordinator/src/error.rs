//! Errors the HTTP API returns: each maps to a status code and a JSON body
//! `{"error": "..."}` that says what was wrong.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or malformed Authorization header; expected `Bearer <token>`")]
    MissingToken,
    #[error("invalid token")]
    WrongToken,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    /// Full for now: the client should retry after this many seconds.
    #[error("{0}")]
    Busy(String, u32),
    #[error("storage failure: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::WrongToken => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy(..) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::Busy(_, seconds) => Some(*seconds),
            _ => None,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
        }
        if let Some(seconds) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        resp
    }
}
