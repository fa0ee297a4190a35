//! What a service call can fail with. Each says what was wrong in words a
//! job owner can act on; the HTTP edge (`net::http::error`) turns each kind
//! into a status code.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(String),
    /// Larger than this coordinator takes at all.
    #[error("{0}")]
    TooLarge(String),
    /// Full for now: the client should retry after this many seconds.
    #[error("{0}")]
    Busy(String, u32),
    /// This client (or everyone) asks for more than is served now: retry after
    /// this many seconds.
    #[error("{0}")]
    Overloaded(String, u32),
    /// No answer within the time the request allows.
    #[error("{0}")]
    Timeout(String),
    /// Something in the coordinator failed that the request could not cause.
    #[error("{0}")]
    Internal(String),
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
}
