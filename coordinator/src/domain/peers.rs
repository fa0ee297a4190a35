//! Peer-to-peer transfers between workers: which worker holds which blob
//! (modules, by SHA-256), which workers are introduced to each other, and
//! the WebRTC signaling relayed between them. A worker may signal only a
//! peer the coordinator named to it (or that was named it) in `Sources`,
//! and only so often: nobody can use the coordinator to reach arbitrary
//! workers.
//!
//! A worker may say it holds only blobs it was given (leased, or asked
//! peers for), and one network's workers hold at most a few of a blob's
//! holder places: nobody can fill the directory with fake holdings or crowd
//! out the real holders of a popular module.
//!
//! Sans-IO like the scheduler: calls take `now`, and the messages to deliver
//! come out of [`Peers::poll_output`].

use super::rate::TokenBucket;
use super::WorkerId;
use idlecore_protocol::{CoordinatorMessage, Sha256Hash, Signal, SignalPayload, Sources};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

/// Peers named in one `Sources` at most.
pub const SOURCES: usize = 3;
/// Signals one introduction carries in both directions (an offer, an
/// answer, a few dozen candidates, a close).
pub const SIGNALS_PER_INTRODUCTION: u32 = 64;
/// Blobs remembered per worker, and holders per blob (the newest kept).
pub(crate) const HELD_PER_WORKER: usize = 256;
const HOLDERS_PER_BLOB: usize = 64;
/// Holder places of one blob that workers of one network may take.
pub(crate) const HOLDERS_PER_ORIGIN: usize = 4;
/// Signals a worker may send, and receive, in a burst; and how many more
/// it may per second after that. Whatever introductions it collects, no
/// worker can flood another (or the coordinator) with signals.
const SIGNAL_BURST: f64 = 128.0;
const SIGNALS_PER_SECOND: f64 = 4.0;
/// Blobs a worker asked for and was given peers for, remembered to count
/// what it then fetched from peers.
const WANTED_PER_WORKER: usize = 64;

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
    origin: Option<u64>,
    /// Blobs it holds, oldest first (and as a set, for lookups).
    held: VecDeque<Sha256Hash>,
    held_set: HashSet<Sha256Hash>,
    /// Blobs it was given (leased or asked for), which it may say it holds;
    /// oldest first, bounded like `held`.
    given: VecDeque<Sha256Hash>,
    given_set: HashSet<Sha256Hash>,
    /// The workers it is introduced to (keys of `Peers::introduced`).
    introduced: HashSet<WorkerId>,
    wanted: VecDeque<Sha256Hash>,
    sending: TokenBucket,
    receiving: TokenBucket,
}

#[derive(Default)]
pub struct Peers {
    links: HashMap<WorkerId, Link>,
    holders: HashMap<Sha256Hash, VecDeque<WorkerId>>,
    /// Introduced pairs (lower id first), with the signals they have left.
    introduced: HashMap<(WorkerId, WorkerId), u32>,
    /// Messages to deliver, oldest first.
    output: VecDeque<(WorkerId, CoordinatorMessage)>,
    pub stats: PeerStats,
}

fn pair(a: WorkerId, b: WorkerId) -> (WorkerId, WorkerId) {
    (a.min(b), a.max(b))
}

fn close(peer: WorkerId) -> CoordinatorMessage {
    CoordinatorMessage::Signal(Signal { peer, payload: SignalPayload::Close })
}

impl Peers {
    /// A worker session began.
    pub fn join(&mut self, worker: WorkerId, origin: Option<u64>, now: Instant) {
        let link = Link {
            origin,
            held: VecDeque::new(),
            held_set: HashSet::new(),
            given: VecDeque::new(),
            given_set: HashSet::new(),
            introduced: HashSet::new(),
            wanted: VecDeque::new(),
            sending: TokenBucket::full(SIGNALS_PER_SECOND, SIGNAL_BURST, now),
            receiving: TokenBucket::full(SIGNALS_PER_SECOND, SIGNAL_BURST, now),
        };
        self.links.insert(worker, link);
    }

    /// A worker session ended: it holds nothing any more, and the peers it
    /// was introduced to are told to give up on it.
    pub fn leave(&mut self, worker: WorkerId) {
        let Some(link) = self.links.remove(&worker) else { return };
        for blob in link.held {
            self.drop_holder(blob, worker);
        }
        for other in link.introduced {
            self.introduced.remove(&pair(worker, other));
            if let Some(l) = self.links.get_mut(&other) {
                l.introduced.remove(&worker);
                self.output.push_back((other, close(worker)));
            }
        }
    }

    /// `worker` was sent `blobs` to fetch (a lease's module and inputs): it
    /// may say it holds them.
    pub fn given(&mut self, worker: WorkerId, blobs: impl IntoIterator<Item = Sha256Hash>) {
        let Some(link) = self.links.get_mut(&worker) else { return };
        for blob in blobs {
            if link.given_set.insert(blob) {
                link.given.push_back(blob);
                if link.given.len() > HELD_PER_WORKER {
                    let old = link.given.pop_front().expect("over the limit");
                    link.given_set.remove(&old);
                }
            }
        }
    }

    /// `worker` holds `blobs` and serves them to peers. Only blobs it was
    /// given count, and only while its network has holder places left.
    pub fn have(&mut self, worker: WorkerId, blobs: &[Sha256Hash]) {
        for blob in blobs {
            let Some(link) = self.links.get(&worker) else { return };
            if !link.given_set.contains(blob) || link.held_set.contains(blob) {
                continue;
            }
            let origin = link.origin;
            let same_network = |w: &WorkerId| origin.is_some() && self.links.get(w).is_some_and(|l| l.origin == origin);
            if self.holders.get(blob).is_some_and(|h| h.iter().filter(|w| same_network(w)).count() >= HOLDERS_PER_ORIGIN) {
                continue;
            }
            let link = self.links.get_mut(&worker).expect("checked above");
            link.held_set.insert(*blob);
            link.held.push_back(*blob);
            let forgotten = (link.held.len() > HELD_PER_WORKER).then(|| link.held.pop_front()).flatten();
            if let Some(old) = forgotten {
                link.held_set.remove(&old);
                self.drop_holder(old, worker);
            }
            let holders = self.holders.entry(*blob).or_default();
            holders.push_back(worker);
            if holders.len() > HOLDERS_PER_BLOB {
                let evicted = holders.pop_front().expect("over the limit");
                if let Some(l) = self.links.get_mut(&evicted) {
                    l.held_set.remove(blob);
                    l.held.retain(|b| b != blob);
                }
            }
        }
    }

    /// Of `blobs`, those `worker` was given peers for (each counted once):
    /// what it fetched from peers rather than the coordinator.
    pub fn fetched_from_peers(&mut self, worker: WorkerId, blobs: &[Sha256Hash]) -> Vec<Sha256Hash> {
        let Some(link) = self.links.get_mut(&worker) else { return vec![] };
        let mut counted = vec![];
        for blob in blobs {
            if let Some(at) = link.wanted.iter().position(|b| b == blob) {
                link.wanted.remove(at);
                counted.push(*blob);
            }
        }
        counted
    }

    fn drop_holder(&mut self, blob: Sha256Hash, worker: WorkerId) {
        if let Some(h) = self.holders.get_mut(&blob) {
            h.retain(|w| *w != worker);
            if h.is_empty() {
                self.holders.remove(&blob);
            }
        }
    }

    /// Up to `SOURCES` other workers holding `blob`, those on the asking
    /// worker's network first (nearest); each pair is introduced.
    pub fn want(&mut self, worker: WorkerId, blob: Sha256Hash) -> Sources {
        let origin = self.links.get(&worker).and_then(|l| l.origin);
        let mut peers: Vec<WorkerId> =
            self.holders.get(&blob).into_iter().flatten().rev().copied().filter(|w| *w != worker && self.links.contains_key(w)).collect();
        // Stable: the newest holders first within each group.
        peers.sort_by_key(|w| origin.is_none() || self.links[w].origin != origin);
        peers.truncate(SOURCES);
        for p in &peers {
            // An existing introduction keeps what is left of its budget.
            if let std::collections::hash_map::Entry::Vacant(e) = self.introduced.entry(pair(worker, *p)) {
                e.insert(SIGNALS_PER_INTRODUCTION);
                self.stats.introductions += 1;
                for (a, b) in [(worker, *p), (*p, worker)] {
                    if let Some(l) = self.links.get_mut(&a) {
                        l.introduced.insert(b);
                    }
                }
            }
        }
        // Asked for, it may hold it: from a peer or from the coordinator.
        self.given(worker, [blob]);
        if let Some(link) = self.links.get_mut(&worker).filter(|_| !peers.is_empty()) {
            if !link.wanted.contains(&blob) {
                link.wanted.push_back(blob);
                if link.wanted.len() > WANTED_PER_WORKER {
                    link.wanted.pop_front();
                }
            }
        }
        Sources { blob, peers }
    }

    /// Passes a signal from `from` on to its peer, or answers `Close` when
    /// the two were not introduced, used up their signals, or the peer is gone.
    pub fn relay(&mut self, from: WorkerId, signal: Signal, now: Instant) {
        let to = signal.peer;
        let key = pair(from, to);
        let closing = signal.payload == SignalPayload::Close;
        // Introduced first: a stranger's signals cost the recipient nothing.
        let introduced = self.introduced.get(&key).is_some_and(|left| *left > 0);
        let rate_ok = closing || (introduced && self.rate_ok(from, to, now));
        if !introduced && !closing {
            // A refused signal is charged to its sender alone.
            if let Some(l) = self.links.get_mut(&from) {
                l.sending.take(now);
            }
        }
        let allowed = self.introduced.get_mut(&key).filter(|left| **left > 0 && rate_ok);
        let delivered = match (allowed, self.links.contains_key(&to)) {
            (Some(left), true) => {
                *left -= 1;
                self.output.push_back((to, CoordinatorMessage::Signal(Signal { peer: from, payload: signal.payload })));
                if closing {
                    self.introduced.remove(&key);
                    for (a, b) in [(from, to), (to, from)] {
                        if let Some(l) = self.links.get_mut(&a) {
                            l.introduced.remove(&b);
                        }
                    }
                }
                true
            }
            _ => false,
        };
        if delivered {
            self.stats.relayed += 1;
        } else {
            self.stats.refused += 1;
            if !closing && self.links.contains_key(&from) {
                self.output.push_back((from, close(to)));
            }
        }
    }

    /// Takes a token from the sender's and the recipient's buckets, if both have one.
    fn rate_ok(&mut self, from: WorkerId, to: WorkerId, now: Instant) -> bool {
        let sender = self.links.get_mut(&from).is_some_and(|l| l.sending.has_token(now));
        let recipient = self.links.get_mut(&to).is_some_and(|l| l.receiving.has_token(now));
        if sender && recipient {
            self.links.get_mut(&from).expect("checked").sending.spend();
            self.links.get_mut(&to).expect("checked").receiving.spend();
        }
        sender && recipient
    }

    /// The next message to deliver: (to whom, what), oldest first.
    pub fn poll_output(&mut self) -> Option<(WorkerId, CoordinatorMessage)> {
        self.output.pop_front()
    }

    /// Blobs known to be held, and workers holding any.
    pub fn holdings(&self) -> (usize, usize) {
        (self.holders.len(), self.links.values().filter(|l| !l.held.is_empty()).count())
    }
}

#[cfg(test)]
mod tests;
