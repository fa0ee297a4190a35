//! The HTTP face of every error: a status that fits and a JSON body
//! `{"error": "..."}` that says what was wrong. The only place service
//! errors become HTTP.

use crate::services::ServiceError;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("missing or malformed Authorization header; expected `Bearer <token>`")]
    MissingToken,
    #[error("invalid token")]
    WrongToken,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl HttpError {
    fn status(&self) -> StatusCode {
        match self {
            HttpError::MissingToken | HttpError::WrongToken => StatusCode::UNAUTHORIZED,
            HttpError::Service(e) => match e {
                ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
                ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
                ServiceError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                ServiceError::Busy(..) => StatusCode::SERVICE_UNAVAILABLE,
                ServiceError::Overloaded(..) => StatusCode::TOO_MANY_REQUESTS,
                ServiceError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                ServiceError::Store(_) | ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl From<crate::store::StoreError> for HttpError {
    fn from(e: crate::store::StoreError) -> HttpError {
        HttpError::Service(e.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            HttpError::Service(ServiceError::Busy(_, seconds) | ServiceError::Overloaded(_, seconds)) => Some(*seconds),
            _ => None,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        resp
    }
}
