//! The job owners' bearer token. Only its SHA-256 is stored.

use crate::error::ApiError;
use crate::store::{Store, StoreError, Write};
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

const TOKEN_KEY: &str = "job_token_sha256";

/// How the token was settled at start-up.
pub enum TokenSource {
    /// Given on the command line or in the environment.
    Configured,
    /// Made now, on the first start with this data dir; shown once.
    Generated(String),
    /// Made on an earlier start; only its hash is known.
    Stored,
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Settles the token hash for this data dir.
pub async fn init(store: &Store, configured: Option<String>) -> Result<([u8; 32], TokenSource), StoreError> {
    if let Some(token) = configured {
        let hash = hash_token(&token);
        store.write(Write::SetSetting { key: TOKEN_KEY.into(), value: hex::encode(hash) }).await?;
        return Ok((hash, TokenSource::Configured));
    }
    if let Some(stored) = store.setting(TOKEN_KEY).await? {
        let bytes = hex::decode(&stored).map_err(|e| StoreError::Corrupt(format!("token hash: {e}")))?;
        let hash: [u8; 32] = bytes.try_into().map_err(|_| StoreError::Corrupt("token hash length".into()))?;
        return Ok((hash, TokenSource::Stored));
    }
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Corrupt(format!("no randomness: {e}")))?;
    let token = format!("idc_{}", hex::encode(raw));
    let hash = hash_token(&token);
    store.write(Write::SetSetting { key: TOKEN_KEY.into(), value: hex::encode(hash) }).await?;
    Ok((hash, TokenSource::Generated(token)))
}

/// Checks `Authorization: Bearer <token>` against the stored hash.
pub fn check(headers: &HeaderMap, expected: &[u8; 32]) -> Result<(), ApiError> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(ApiError::MissingToken)?;
    let token = value.strip_prefix("Bearer ").ok_or(ApiError::MissingToken)?;
    let got = hash_token(token.trim());
    // Compare every byte so timing does not reveal a matching prefix.
    let diff = got.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        Ok(())
    } else {
        Err(ApiError::WrongToken)
    }
}
