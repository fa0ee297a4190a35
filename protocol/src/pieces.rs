//! Protocol frames over a WebRTC data channel. A frame may be far larger than
//! a data channel message (browsers take 256 KiB at most, and some less), so
//! each frame travels as pieces of at most [`PIECE_BYTES`]: a flag byte, `0`
//! when more pieces follow and `1` on the frame's last one, then the bytes.
//! The receiver checks the frame's size as pieces arrive.

use alloc::vec::Vec;

/// Bytes of frame per piece (plus the flag byte).
pub const PIECE_BYTES: usize = 64 * 1024 - 1;

const MORE: u8 = 0;
const LAST: u8 = 1;

/// The pieces of one frame, in order (one piece for an empty frame).
pub fn split(frame: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let count = frame.len().div_ceil(PIECE_BYTES).max(1);
    (0..count).map(move |i| {
        let part = &frame[(i * PIECE_BYTES).min(frame.len())..((i + 1) * PIECE_BYTES).min(frame.len())];
        let mut piece = Vec::with_capacity(part.len() + 1);
        piece.push(if i + 1 == count { LAST } else { MORE });
        piece.extend_from_slice(part);
        piece
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceError {
    /// The frame grew past the limit.
    TooLarge { limit: usize },
    /// A piece with no flag byte, or a flag other than 0 or 1.
    Malformed,
}

impl core::fmt::Display for PieceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PieceError::TooLarge { limit } => write!(f, "a frame longer than {limit} bytes"),
            PieceError::Malformed => f.write_str("a data channel message that is not a frame piece"),
        }
    }
}

/// Puts frames back together from their pieces.
pub struct Joiner {
    frame: Vec<u8>,
    limit: usize,
}

impl Joiner {
    /// Refuses frames longer than `limit` bytes.
    pub fn new(limit: usize) -> Joiner {
        Joiner { frame: Vec::new(), limit }
    }

    /// Takes the next piece; returns the frame when it was the last one.
    /// After an error the channel is unusable (the caller closes it).
    pub fn push(&mut self, piece: &[u8]) -> Result<Option<Vec<u8>>, PieceError> {
        let (&flag, bytes) = piece.split_first().ok_or(PieceError::Malformed)?;
        if flag > LAST {
            return Err(PieceError::Malformed);
        }
        if self.frame.len() + bytes.len() > self.limit {
            return Err(PieceError::TooLarge { limit: self.limit });
        }
        self.frame.extend_from_slice(bytes);
        Ok((flag == LAST).then(|| core::mem::take(&mut self.frame)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn frames_of_every_size_come_back_whole() {
        for len in [0, 1, PIECE_BYTES - 1, PIECE_BYTES, PIECE_BYTES + 1, 3 * PIECE_BYTES + 17] {
            let frame: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let pieces: Vec<Vec<u8>> = split(&frame).collect();
            assert_eq!(pieces.len(), len.div_ceil(PIECE_BYTES).max(1), "len {len}");
            assert!(pieces.iter().all(|p| p.len() <= PIECE_BYTES + 1));
            let mut joiner = Joiner::new(1 << 20);
            let (last, rest) = pieces.split_last().unwrap();
            for p in rest {
                assert_eq!(joiner.push(p), Ok(None));
            }
            assert_eq!(joiner.push(last), Ok(Some(frame.clone())), "len {len}");
            // The next frame starts afresh.
            assert_eq!(joiner.push(&[1, 9]), Ok(Some(vec![9])));
        }
    }

    #[test]
    fn oversized_frames_and_bad_pieces_are_refused() {
        let mut joiner = Joiner::new(10);
        assert_eq!(joiner.push(&[0, 1, 2, 3, 4, 5, 6]), Ok(None));
        assert_eq!(joiner.push(&[1, 7, 8, 9, 10, 11]), Err(PieceError::TooLarge { limit: 10 }));
        assert_eq!(Joiner::new(10).push(&[]), Err(PieceError::Malformed));
        assert_eq!(Joiner::new(10).push(&[2, 1]), Err(PieceError::Malformed));
    }
}
