//! Encoding and checked decoding of frames.

use crate::limits::*;
use crate::{CoordinatorMessage, WorkerMessage};
use alloc::string::String;
use alloc::vec::Vec;

/// Why a frame was refused. The `Display` text is what the peer is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes exceeds the maximum of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("field `{field}` breaks its limit of {limit}")]
    Limit { field: &'static str, limit: usize },
}

/// Variant counts, so an unknown first byte gets its own error.
const WORKER_TYPES: u8 = 8;
const COORDINATOR_TYPES: u8 = 8;

pub fn encode_worker(msg: &WorkerMessage) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("worker messages always serialize")
}

pub fn encode_coordinator(msg: &CoordinatorMessage) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("coordinator messages always serialize")
}

fn decode<'a, T: serde::Deserialize<'a>>(frame: &'a [u8], types: u8) -> Result<T, DecodeError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge(frame.len()));
    }
    let Some(&tag) = frame.first() else {
        return Err(DecodeError::Empty);
    };
    // Variant indexes are varints; every valid one is a single byte.
    if tag >= types {
        return Err(DecodeError::UnknownType(tag));
    }
    let (msg, rest) = postcard::take_from_bytes::<T>(frame).map_err(|e| DecodeError::Malformed(alloc::format!("{e}")))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(msg)
}

fn check(ok: bool, field: &'static str, limit: usize) -> Result<(), DecodeError> {
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Limit { field, limit })
    }
}

fn check_files<'a>(files: impl Iterator<Item = &'a crate::TaskFile>) -> Result<(), DecodeError> {
    let mut count = 0;
    for f in files {
        count += 1;
        check(f.path.len() <= MAX_PATH_BYTES, "files.path", MAX_PATH_BYTES)?;
    }
    check(count <= MAX_FILES, "files", MAX_FILES)
}

/// Checks a signal's limits (SDP and candidate lengths), as decoding does:
/// a sender checks before sending, since the receiver ends a session that
/// breaks them.
pub fn check_signal(s: &crate::Signal) -> Result<(), DecodeError> {
    use crate::SignalPayload::*;
    match &s.payload {
        Offer(sdp) | Answer(sdp) => check(sdp.len() <= MAX_SDP_BYTES, "sdp", MAX_SDP_BYTES),
        Candidate(c) => check(c.candidate.len() <= MAX_ICE_BYTES && c.mid.len() <= MAX_ICE_BYTES, "candidate", MAX_ICE_BYTES),
        Close => Ok(()),
    }
}

/// The version a `Hello` frame claims, read before the rest: a worker of
/// another protocol version sends a `Hello` this version may not decode,
/// and must still be told that its version is the problem.
pub fn hello_version(frame: &[u8]) -> Option<u32> {
    match frame.split_first() {
        Some((0, rest)) => postcard::take_from_bytes::<u32>(rest).ok().map(|(v, _)| v),
        _ => None,
    }
}

/// Decodes a frame sent by a worker and checks every limit.
pub fn decode_worker(frame: &[u8]) -> Result<WorkerMessage, DecodeError> {
    let msg: WorkerMessage = decode(frame, WORKER_TYPES)?;
    match &msg {
        WorkerMessage::Hello(h) => {
            check(h.agent.len() <= MAX_TEXT_BYTES, "agent", MAX_TEXT_BYTES)?;
            check(h.slots <= MAX_SLOTS, "slots", MAX_SLOTS as usize)?;
        }
        WorkerMessage::Failure(f) => {
            check(f.message.len() <= MAX_TEXT_BYTES, "message", MAX_TEXT_BYTES)?;
        }
        WorkerMessage::Heartbeat(h) => {
            check(h.leases.len() <= MAX_HEARTBEAT_LEASES, "leases", MAX_HEARTBEAT_LEASES)?;
        }
        WorkerMessage::Result(r) => check_files(r.files.iter())?,
        WorkerMessage::Capacity(c) => check(c.slots <= MAX_SLOTS, "slots", MAX_SLOTS as usize)?,
        WorkerMessage::Signal(s) => check_signal(s)?,
        WorkerMessage::Have(h) => check(h.blobs.len() <= MAX_HAVE_BLOBS, "blobs", MAX_HAVE_BLOBS)?,
        WorkerMessage::Want(_) => {}
    }
    Ok(msg)
}

fn check_lease(l: &crate::Lease) -> Result<(), DecodeError> {
    check(l.args.len() <= MAX_ARGS, "args", MAX_ARGS)?;
    check(l.env.len() <= MAX_ENV, "env", MAX_ENV)?;
    let long = l.args.iter().chain(l.env.iter().flat_map(|(k, v)| [k, v])).any(|s| s.len() > MAX_ARG_BYTES);
    check(!long, "args/env entry", MAX_ARG_BYTES)?;
    check(l.dirs.len() <= MAX_DIRS, "dirs", MAX_DIRS)?;
    check(l.dirs.iter().all(|d| d.guest.len() <= MAX_PATH_BYTES), "dirs.guest", MAX_PATH_BYTES)?;
    check_files(l.dirs.iter().flat_map(|d| d.files.iter()))?;
    check(l.blobs.len() <= MAX_LEASE_BLOBS, "blobs", MAX_LEASE_BLOBS)?;
    let total = l.blobs.iter().try_fold(0u64, |sum, b| sum.checked_add(b.size));
    check(total.is_some_and(|t| t <= MAX_LEASE_BLOB_BYTES), "blobs.size", MAX_LEASE_BLOB_BYTES as usize)?;
    let mut stdin = 0;
    for b in &l.blobs {
        match &b.target {
            crate::BlobTarget::Stdin => stdin += 1,
            crate::BlobTarget::File { dir, path } => {
                check((*dir as usize) < l.dirs.len(), "blobs.dir", l.dirs.len())?;
                check(path.len() <= MAX_PATH_BYTES, "blobs.path", MAX_PATH_BYTES)?;
            }
        }
    }
    check(stdin <= 1 && (stdin == 0 || l.stdin.is_empty()), "blobs.stdin", 1)?;
    let files = l.dirs.iter().map(|d| d.files.len()).sum::<usize>() + l.blobs.len() - stdin;
    check(files <= MAX_FILES, "files", MAX_FILES)
}

/// Decodes a frame sent by a coordinator and checks every limit.
pub fn decode_coordinator(frame: &[u8]) -> Result<CoordinatorMessage, DecodeError> {
    let msg: CoordinatorMessage = decode(frame, COORDINATOR_TYPES)?;
    match &msg {
        CoordinatorMessage::Lease(l) => check_lease(l)?,
        CoordinatorMessage::Leases(ls) => {
            check(!ls.is_empty() && ls.len() <= MAX_SLOTS as usize, "leases", MAX_SLOTS as usize)?;
            for l in ls {
                check_lease(l)?;
            }
        }
        CoordinatorMessage::Error(e) => {
            check(e.message.len() <= MAX_TEXT_BYTES, "message", MAX_TEXT_BYTES)?;
        }
        CoordinatorMessage::Welcome(w) => {
            check(w.blob_path.len() <= MAX_TEXT_BYTES, "blob_path", MAX_TEXT_BYTES)?;
            check(w.ice_servers.len() <= MAX_ICE_SERVERS, "ice_servers", MAX_ICE_SERVERS)?;
            for server in &w.ice_servers {
                check(server.urls.len() <= MAX_ICE_SERVERS, "ice_servers.urls", MAX_ICE_SERVERS)?;
                let long = server.urls.iter().chain([&server.username, &server.credential]).any(|t| t.len() > MAX_ICE_BYTES);
                check(!long, "ice_servers entry", MAX_ICE_BYTES)?;
            }
        }
        CoordinatorMessage::Signal(s) => check_signal(s)?,
        CoordinatorMessage::Sources(s) => check(s.peers.len() <= MAX_SOURCES, "peers", MAX_SOURCES)?,
        CoordinatorMessage::Cancel(c) => check(c.leases.len() <= MAX_HEARTBEAT_LEASES, "leases", MAX_HEARTBEAT_LEASES)?,
        CoordinatorMessage::Ack(_) => {}
    }
    Ok(msg)
}
