//! Peer-to-peer transfers between workers: which worker holds which blob
//! (modules, by SHA-256), which workers are introduced to each other, and
//! the WebRTC signaling relayed between them. A worker may signal only a
//! peer the coordinator named to it (or that was named it) in `Sources`,
//! and only so often: nobody can use the coordinator to reach arbitrary
//! workers.

use crate::scheduler::WorkerId;
use idlecore_protocol::{CoordinatorMessage, ModuleHash, Signal, SignalPayload, Sources};
use std::collections::{HashMap, VecDeque};
use tokio::sync::mpsc::UnboundedSender;

/// Peers named in one `Sources` at most.
pub const SOURCES: usize = 3;
/// Signals one introduction carries in both directions (an offer, an
/// answer, a few dozen candidates, a close).
pub const SIGNALS_PER_INTRODUCTION: u32 = 64;
/// Blobs remembered per worker, and holders per blob (the newest kept).
const HELD_PER_WORKER: usize = 4096;
const HOLDERS_PER_BLOB: usize = 64;

/// What peer transfers did, for `/api/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerStats {
    /// Workers introduced to a holder of a blob they wanted.
    pub introductions: u64,
    /// Signals passed on between introduced workers.
    pub relayed: u64,
    /// Signals refused (not introduced, too many, or the peer is gone).
    pub refused: u64,
    /// Blobs workers fetched from peers instead of the coordinator, and their bytes.
    pub peer_fetches: u64,
    pub peer_bytes: u64,
}

struct Link {
    tx: UnboundedSender<CoordinatorMessage>,
    origin: Option<u64>,
    held: VecDeque<ModuleHash>,
}

#[derive(Default)]
pub struct Peers {
    links: HashMap<WorkerId, Link>,
    holders: HashMap<ModuleHash, VecDeque<WorkerId>>,
    /// Introduced pairs (lower id first), with the signals they have left.
    introduced: HashMap<(WorkerId, WorkerId), u32>,
    pub stats: PeerStats,
}

fn pair(a: WorkerId, b: WorkerId) -> (WorkerId, WorkerId) {
    (a.min(b), a.max(b))
}

fn close(peer: WorkerId) -> CoordinatorMessage {
    CoordinatorMessage::Signal(Signal { peer, payload: SignalPayload::Close })
}

impl Peers {
    /// A worker session began: messages for it go to `tx`.
    pub fn join(&mut self, worker: WorkerId, tx: UnboundedSender<CoordinatorMessage>, origin: Option<u64>) {
        self.links.insert(worker, Link { tx, origin, held: VecDeque::new() });
    }

    /// A worker session ended: it holds nothing any more, and the peers it
    /// was introduced to are told to give up on it.
    pub fn leave(&mut self, worker: WorkerId) {
        let Some(link) = self.links.remove(&worker) else { return };
        for blob in link.held {
            self.drop_holder(blob, worker);
        }
        let gone: Vec<(WorkerId, WorkerId)> = self.introduced.keys().filter(|(a, b)| *a == worker || *b == worker).copied().collect();
        for key in gone {
            self.introduced.remove(&key);
            let other = if key.0 == worker { key.1 } else { key.0 };
            if let Some(l) = self.links.get(&other) {
                let _ = l.tx.send(close(worker));
            }
        }
    }

    /// `worker` holds `blobs` and serves them to peers.
    pub fn have(&mut self, worker: WorkerId, blobs: &[ModuleHash]) {
        for blob in blobs {
            let Some(link) = self.links.get_mut(&worker) else { return };
            if link.held.contains(blob) {
                continue;
            }
            link.held.push_back(*blob);
            let forgotten = (link.held.len() > HELD_PER_WORKER).then(|| link.held.pop_front()).flatten();
            let holders = self.holders.entry(*blob).or_default();
            holders.push_back(worker);
            if holders.len() > HOLDERS_PER_BLOB {
                holders.pop_front();
            }
            if let Some(old) = forgotten {
                self.drop_holder(old, worker);
            }
        }
    }

    fn drop_holder(&mut self, blob: ModuleHash, worker: WorkerId) {
        if let Some(h) = self.holders.get_mut(&blob) {
            h.retain(|w| *w != worker);
            if h.is_empty() {
                self.holders.remove(&blob);
            }
        }
    }

    /// Up to `SOURCES` other workers holding `blob`, those on the asking
    /// worker's network first (nearest); each pair is introduced.
    pub fn want(&mut self, worker: WorkerId, blob: ModuleHash) -> Sources {
        let origin = self.links.get(&worker).and_then(|l| l.origin);
        let mut peers: Vec<WorkerId> = self
            .holders
            .get(&blob)
            .into_iter()
            .flatten()
            .rev()
            .copied()
            .filter(|w| *w != worker && self.links.contains_key(w))
            .collect();
        // Stable: the newest holders first within each group.
        peers.sort_by_key(|w| origin.is_none() || self.links[w].origin != origin);
        peers.truncate(SOURCES);
        for p in &peers {
            self.introduced.insert(pair(worker, *p), SIGNALS_PER_INTRODUCTION);
            self.stats.introductions += 1;
        }
        Sources { blob, peers }
    }

    /// Passes a signal from `from` on to its peer, or answers `Close` when
    /// the two were not introduced, used up their signals, or the peer is gone.
    pub fn relay(&mut self, from: WorkerId, signal: Signal) {
        let to = signal.peer;
        let key = pair(from, to);
        let closing = signal.payload == SignalPayload::Close;
        let allowed = self.introduced.get_mut(&key).filter(|left| **left > 0);
        let delivered = match (allowed, self.links.get(&to)) {
            (Some(left), Some(link)) => {
                *left -= 1;
                let sent = link.tx.send(CoordinatorMessage::Signal(Signal { peer: from, payload: signal.payload })).is_ok();
                if closing {
                    self.introduced.remove(&key);
                }
                sent
            }
            _ => false,
        };
        if delivered {
            self.stats.relayed += 1;
        } else {
            self.stats.refused += 1;
            if !closing {
                if let Some(link) = self.links.get(&from) {
                    let _ = link.tx.send(close(to));
                }
            }
        }
    }

    /// Blobs known to be held, and workers holding any.
    pub fn holdings(&self) -> (usize, usize) {
        (self.holders.len(), self.links.values().filter(|l| !l.held.is_empty()).count())
    }
}

#[cfg(test)]
mod tests;
