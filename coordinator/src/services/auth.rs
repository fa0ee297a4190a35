//! The job owners' bearer token. Only its SHA-256 is stored; the HTTP edge
//! reads the header (`net::http::Owner`) and asks [`TokenHash::matches`].

use crate::store::{Store, StoreError, Write};
use idlecore_protocol::Sha256Hash;

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

/// The SHA-256 of the job owners' token.
#[derive(Clone, Copy)]
pub struct TokenHash(Sha256Hash);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256Hash::of(token.as_bytes()))
    }

    /// Whether `token` is the job owners' token. Every byte of the hashes is
    /// compared, so timing does not reveal a matching prefix.
    pub fn matches(&self, token: &str) -> bool {
        let got = Sha256Hash::of(token.as_bytes());
        got.0.iter().zip(self.0 .0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// Settles the token hash for this data dir.
pub async fn init(store: &Store, configured: Option<String>) -> Result<(TokenHash, TokenSource), StoreError> {
    if let Some(token) = configured {
        let hash = TokenHash::of(&token);
        store.write(Write::SetSetting { key: TOKEN_KEY.into(), value: hash.0.to_hex() }).await?;
        return Ok((hash, TokenSource::Configured));
    }
    if let Some(stored) = store.setting(TOKEN_KEY).await? {
        let hash = stored.parse().map_err(|e| StoreError::Corrupt(format!("token hash: {e}")))?;
        return Ok((TokenHash(hash), TokenSource::Stored));
    }
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Corrupt(format!("no randomness: {e}")))?;
    let token = format!("idc_{}", hex::encode(raw));
    let hash = TokenHash::of(&token);
    store.write(Write::SetSetting { key: TOKEN_KEY.into(), value: hash.0.to_hex() }).await?;
    Ok((hash, TokenSource::Generated(token)))
}

#[cfg(test)]
mod tests {
    use super::TokenHash;

    #[test]
    fn only_the_token_itself_matches() {
        let t = TokenHash::of("idc_secret");
        assert!(t.matches("idc_secret"));
        for other in ["", "idc_secre", "idc_secret ", "IDC_SECRET", "idc_secret\0"] {
            assert!(!t.matches(other), "{other:?}");
        }
    }
}
