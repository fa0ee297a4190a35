//! The one name for content: a SHA-256 digest. Modules, input blobs and
//! task outputs are all named by one, written in hex wherever people see it
//! (URLs, JSON, logs) and as 32 raw bytes in protocol frames.

use alloc::string::String;
use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A SHA-256 digest.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

/// Why text is not a [`Sha256Hash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAHash;

impl fmt::Display for NotAHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a SHA-256 hash (64 hex digits)")
    }
}

impl Sha256Hash {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256Hash {
        Sha256Hash(sha2::Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as URLs and the API write it.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(64);
        let _ = write!(s, "{self}");
        s
    }
}

impl From<[u8; 32]> for Sha256Hash {
    fn from(bytes: [u8; 32]) -> Sha256Hash {
        Sha256Hash(bytes)
    }
}

impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Sha256Hash {
    type Err = NotAHash;
    /// 64 hex digits, either case.
    fn from_str(s: &str) -> Result<Sha256Hash, NotAHash> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(NotAHash);
        }
        let digit = |c: u8| (c as char).to_digit(16).ok_or(NotAHash);
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Sha256Hash(out))
    }
}

/// Hex text in human-readable formats (JSON), 32 raw bytes in frames.
impl Serialize for Sha256Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Sha256Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sha256Hash, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(|_| serde::de::Error::custom(alloc::format!("{text:?} is {NotAHash}")))
        } else {
            <[u8; 32]>::deserialize(d).map(Sha256Hash)
        }
    }
}
