//! Job owners' requests carry `Authorization: Bearer <token>`. [`Owner`] is
//! the extractor that checks it: a handler that takes an `Owner` runs only
//! for the job owner, and runs its body extractor only after the check.

use super::error::HttpError;
use crate::net::Edge;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use std::sync::Arc;

/// Proof that the request came from the job owner.
pub struct Owner;

impl FromRequestParts<Arc<Edge>> for Owner {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, edge: &Arc<Edge>) -> Result<Owner, HttpError> {
        let value = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(HttpError::MissingToken)?;
        let token = value.strip_prefix("Bearer ").ok_or(HttpError::MissingToken)?;
        if edge.services.token.matches(token.trim()) {
            Ok(Owner)
        } else {
            Err(HttpError::WrongToken)
        }
    }
}
