//! The scheduler's unguessable names: lease ids, and the resume secrets
//! that let a reconnected worker go on as itself. Both are keyed hashes
//! (SHA-256) of a counter or a worker id under the coordinator's secret key,
//! which the caller draws at start-up: nothing here reads a random source.

use super::{LeaseId, Scheduler, WorkerId};
use idlecore_protocol::ResumeSecret;
use sha2::{Digest, Sha256};

/// Separates the two uses of the key.
const LEASE: &[u8] = b"idlecore lease id";
const RESUME: &[u8] = b"idlecore resume";
const WORKER: &[u8] = b"idlecore worker id";

fn keyed(key: &[u8; 32], purpose: &[u8], n: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(purpose);
    h.update(n.to_le_bytes());
    h.finalize().into()
}

/// Equality that takes as long whatever bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Scheduler {
    /// The next lease id: 128 bits of a keyed hash of a counter, so ids never
    /// repeat (but with chance 2^-128) and none can be guessed from others.
    pub(super) fn next_lease_id(&mut self) -> LeaseId {
        let n = self.next_lease;
        self.next_lease += 1;
        let digest = keyed(&self.key, LEASE, n);
        LeaseId::from_le_bytes(digest[..16].try_into().expect("16 of 32 bytes"))
    }

    /// A new worker's id: 64 bits of a keyed hash of a counter. Workers name
    /// each other by id (peer signals), so ids must not be guessable either.
    pub(super) fn next_worker_id(&mut self) -> WorkerId {
        loop {
            let n = self.next_worker;
            self.next_worker += 1;
            let digest = keyed(&self.key, WORKER, n);
            let id = WorkerId::from_le_bytes(digest[..8].try_into().expect("8 of 32 bytes"));
            if id != 0 && !self.workers.contains_key(&id) {
                return id;
            }
        }
    }

    /// What `Welcome` gives the worker's session: its id and a MAC of it.
    pub fn resume_secret(&self, worker: WorkerId) -> ResumeSecret {
        let mut secret = [0u8; 24];
        secret[..8].copy_from_slice(&worker.to_le_bytes());
        secret[8..].copy_from_slice(&keyed(&self.key, RESUME, worker)[..16]);
        secret
    }

    /// The worker a `Hello`'s secret proves the session to be, if it is one
    /// this coordinator (since its start) gave out.
    pub fn resumed_worker(&self, secret: &ResumeSecret) -> Option<WorkerId> {
        let worker = WorkerId::from_le_bytes(secret[..8].try_into().expect("8 of 24 bytes"));
        same(&secret[8..], &keyed(&self.key, RESUME, worker)[..16]).then_some(worker)
    }
}
