//! Messages for peer-to-peer transfers between workers: which workers hold
//! which blobs (content-addressed by SHA-256, like modules), and WebRTC
//! signaling relayed through the coordinator between workers it introduced.

use crate::Sha256Hash;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// A STUN or TURN server for peer connections, as `RTCIceServer` has it
/// (`username` and `credential` empty for STUN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// WebRTC signaling between two workers. Sent by a worker, `peer` is the
/// recipient; relayed by the coordinator, it is the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub peer: u64,
    pub payload: SignalPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalPayload {
    /// An SDP offer.
    Offer(String),
    /// An SDP answer.
    Answer(String),
    /// A trickled ICE candidate.
    Candidate(IceCandidate),
    /// The connection is given up: by the peer, or by the coordinator when
    /// the peer is gone or the two were not introduced.
    Close,
}

/// An ICE candidate, as `RTCIceCandidateInit` has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    pub mid: String,
    pub mline: u32,
}

/// Blobs the worker holds and will serve to peers. `from_peers`: it just
/// fetched them from peers instead of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Have {
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { crate::limits::MAX_HAVE_BLOBS }>")]
    pub blobs: Vec<Sha256Hash>,
    pub from_peers: bool,
}

/// The worker needs a blob: which peers hold it?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    pub blob: Sha256Hash,
}

/// Peers that hold `blob`, nearest first, each now introduced to the asking
/// worker for signaling. Empty: fetch it from the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    pub blob: Sha256Hash,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { crate::limits::MAX_SOURCES }>")]
    pub peers: Vec<u64>,
}
