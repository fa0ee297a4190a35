//! Moving a blob (a module, named by its SHA-256) from one worker to another
//! over an ordered, reliable WebRTC data channel. Plain Rust, so both ends
//! are tested natively; the browser side only carries the messages.
//!
//! The asking side sends `Request`; the holder answers `Header` with the
//! blob's length and then `Chunk`s of at most [`CHUNK_BYTES`] in order, or
//! `Missing`. The asker checks the length against its limit before taking
//! anything, counts every byte, and accepts the blob only if its SHA-256 is
//! the name it asked for. The holder hands out chunks one at a time
//! ([`Outgoing::next_chunk`]) so the caller can wait for the channel's
//! buffer to drain between them (flow control).
//!
//! Messages (first byte is the type): `01` + 32-byte hash (Request);
//! `02` + u64 length, little-endian (Header); `03` + bytes (Chunk); `04`
//! (Missing).

use idlecore_protocol::Sha256Hash;

/// Bytes of blob per chunk message (plus one type byte): small enough for
/// every browser's data channel messages.
pub const CHUNK_BYTES: usize = 16 * 1024 - 1;

const REQUEST: u8 = 1;
const HEADER: u8 = 2;
const CHUNK: u8 = 3;
const MISSING: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// The peer does not hold the blob.
    Missing,
    /// The blob is larger than the asker takes.
    TooLarge { size: u64, limit: u64 },
    /// A message that is not part of this exchange, or out of order.
    Unexpected(&'static str),
    /// More bytes than the header announced.
    Overrun,
    /// All bytes arrived but they are not the blob asked for.
    WrongHash,
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Missing => f.write_str("the peer does not hold the blob"),
            TransferError::TooLarge { size, limit } => write!(f, "the blob has {size} bytes, more than the {limit} taken"),
            TransferError::Unexpected(what) => write!(f, "unexpected message: {what}"),
            TransferError::Overrun => f.write_str("more bytes than announced"),
            TransferError::WrongHash => f.write_str("the bytes received do not hash to the blob's name"),
        }
    }
}

/// The asking side's first message.
pub fn request(blob: &Sha256Hash) -> Vec<u8> {
    [&[REQUEST][..], &blob.0[..]].concat()
}

/// Where a fetch stands after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More to come (`received` of `size` bytes so far; size 0 before the header).
    Pending { received: u64, size: u64 },
    /// The whole blob, verified.
    Done(Vec<u8>),
}

/// The asking side of one transfer.
pub struct Fetch {
    blob: Sha256Hash,
    limit: u64,
    size: Option<u64>,
    data: Vec<u8>,
    done: bool,
}

/// Bytes reserved when the header arrives (the rest as chunks come): a
/// header alone, from a peer that then sends nothing, costs little.
const RESERVE_UP_FRONT: usize = 1 << 20;

impl Fetch {
    /// A fetch of `blob`, refusing one larger than `limit` bytes.
    pub fn new(blob: Sha256Hash, limit: u64) -> Fetch {
        Fetch { blob, limit, size: None, data: Vec::new(), done: false }
    }

    /// Takes the holder's next message. An error ends the transfer (the
    /// caller falls back to the coordinator).
    pub fn on_message(&mut self, msg: &[u8]) -> Result<Progress, TransferError> {
        if self.done {
            return Err(TransferError::Unexpected("a message after the blob was complete"));
        }
        match (msg.first().copied(), self.size) {
            (Some(MISSING), None) if msg.len() == 1 => Err(TransferError::Missing),
            (Some(HEADER), None) => {
                let bytes: [u8; 8] = msg[1..].try_into().map_err(|_| TransferError::Unexpected("a header of the wrong length"))?;
                let size = u64::from_le_bytes(bytes);
                let Some(fits) = usize::try_from(size).ok().filter(|_| size <= self.limit) else {
                    return Err(TransferError::TooLarge { size, limit: self.limit });
                };
                self.size = Some(size);
                self.data.reserve_exact(fits.min(RESERVE_UP_FRONT));
                self.progress(size)
            }
            (Some(CHUNK), Some(size)) => {
                let chunk = &msg[1..];
                if chunk.is_empty() || chunk.len() > CHUNK_BYTES {
                    return Err(TransferError::Unexpected("a chunk of the wrong length"));
                }
                if self.data.len() as u64 + chunk.len() as u64 > size {
                    return Err(TransferError::Overrun);
                }
                self.data.extend_from_slice(chunk);
                self.progress(size)
            }
            (Some(HEADER | MISSING), Some(_)) => Err(TransferError::Unexpected("a second header")),
            (Some(CHUNK), None) => Err(TransferError::Unexpected("a chunk before the header")),
            _ => Err(TransferError::Unexpected("an unknown message type")),
        }
    }

    fn progress(&mut self, size: u64) -> Result<Progress, TransferError> {
        if (self.data.len() as u64) < size {
            return Ok(Progress::Pending { received: self.data.len() as u64, size });
        }
        self.done = true;
        if Sha256Hash::of(&self.data) != self.blob {
            return Err(TransferError::WrongHash);
        }
        Ok(Progress::Done(std::mem::take(&mut self.data)))
    }
}

/// The blob a peer's `Request` names.
pub fn requested(msg: &[u8]) -> Result<Sha256Hash, TransferError> {
    match msg.split_first() {
        Some((&REQUEST, hash)) => hash.try_into().map(Sha256Hash).map_err(|_| TransferError::Unexpected("a request of the wrong length")),
        _ => Err(TransferError::Unexpected("not a request")),
    }
}

/// The holding side of one transfer: the header, then each chunk as the
/// channel has room for it.
pub struct Outgoing {
    blob: Option<Vec<u8>>,
    header_sent: bool,
    offset: usize,
}

impl Outgoing {
    /// Answers a request for a blob held (`Some(bytes)`) or not (`None`).
    pub fn new(blob: Option<Vec<u8>>) -> Outgoing {
        Outgoing { blob, header_sent: false, offset: 0 }
    }

    /// Bytes of the blob handed out so far (in chunks).
    pub fn sent(&self) -> usize {
        self.offset
    }

    /// Everything is handed out (the header, every chunk; or `Missing`).
    pub fn finished(&self) -> bool {
        self.header_sent && self.blob.as_ref().is_none_or(|b| self.offset >= b.len())
    }

    /// The next message to send, `None` when all are sent.
    pub fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let Some(blob) = &self.blob else {
            if self.header_sent {
                return None;
            }
            self.header_sent = true;
            return Some(vec![MISSING]);
        };
        if !self.header_sent {
            self.header_sent = true;
            return Some([&[HEADER][..], &(blob.len() as u64).to_le_bytes()].concat());
        }
        if self.offset >= blob.len() {
            return None;
        }
        let end = (self.offset + CHUNK_BYTES).min(blob.len());
        let msg = [&[CHUNK][..], &blob[self.offset..end]].concat();
        self.offset = end;
        Some(msg)
    }
}

#[cfg(test)]
mod tests;
