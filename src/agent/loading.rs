//! Loading what waiting leases need: which leases are admitted under the
//! input budget, where each blob comes from (the cache, peers, the
//! coordinator), and what a load's outcome does to the leases waiting on it.

use super::{blobs, peers, Agent, Event, INPUT_BUDGET, MODULE_CACHE_MIB};
use blobs::Kind;
use idlecore_protocol::{Have, Lease, Sha256Hash, WorkerMessage};
use std::collections::HashMap;

impl Agent {
    /// The first waiting leases whose inputs fit the input budget together
    /// (the first lease always): how many, and their inputs with sizes.
    /// Only these load; their inputs are not evicted until they run, so
    /// later leases cannot push them out (and fetch them again).
    pub(super) fn admitted(&self) -> (usize, HashMap<Sha256Hash, u64>) {
        let (mut n, mut inputs, mut total) = (0, HashMap::new(), 0u64);
        for l in &self.waiting {
            let more: u64 = l.blobs.iter().filter(|b| !inputs.contains_key(&b.hash)).map(|b| b.size).sum();
            if n > 0 && total + more > INPUT_BUDGET as u64 {
                break;
            }
            total += more;
            inputs.extend(l.blobs.iter().map(|b| (b.hash, b.size)));
            n += 1;
        }
        (n, inputs)
    }

    /// Loads what the admitted leases need and is not held (nor loading).
    pub(super) fn load_waiting(&mut self) {
        let (n, _) = self.admitted();
        let needs: Vec<(Sha256Hash, Vec<(Sha256Hash, u64)>)> =
            self.waiting.iter().take(n).map(|l| (l.module, l.blobs.iter().map(|b| (b.hash, b.size)).collect())).collect();
        for (module, inputs) in needs {
            self.load(module, Kind::Module, self.module_budget());
            for (hash, size) in inputs {
                self.load(hash, Kind::Input, size);
            }
        }
    }

    pub(super) fn module_budget(&self) -> u64 {
        self.opts.module_cache_mib.unwrap_or(MODULE_CACHE_MIB) as u64 * 1024 * 1024
    }

    pub(super) fn held(&self, hash: &Sha256Hash, kind: Kind) -> bool {
        match kind {
            Kind::Module => self.modules.contains(hash),
            Kind::Input => self.inputs.contains(hash),
        }
    }

    pub(super) fn ready(&self, lease: &Lease) -> bool {
        self.modules.contains(&lease.module) && lease.blobs.iter().all(|b| self.inputs.contains(&b.hash))
    }

    /// The session's blob path, once `Welcome` gave it.
    pub(super) fn welcomed_path(&self) -> Option<String> {
        self.session.as_ref().and_then(|s| s.blob_path.clone())
    }

    /// Where the coordinator serves a blob (its default path before `Welcome`).
    pub(super) fn blob_url(&self, hash: &Sha256Hash) -> Result<String, String> {
        let path = self.welcomed_path().unwrap_or_else(|| "/blobs/".into());
        blobs::blob_url(&self.opts.coordinator, &path, hash)
    }

    /// Loads a blob from the persistent cache (modules), else from peers
    /// (with a session to find them through), else from the coordinator.
    /// `limit`: the most bytes a peer may send for it.
    pub(super) fn load(&mut self, hash: Sha256Hash, kind: Kind, limit: u64) {
        if self.held(&hash, kind) || !self.loading.insert((hash, kind)) {
            return;
        }
        let ask_peers = self.welcomed_path().is_some() && self.opts.peers;
        let notify = self.notify.clone();
        match self.blob_url(&hash) {
            Ok(url) => wasm_bindgen_futures::spawn_local(async move {
                notify(match blobs::from_cache(&url, hash, kind).await {
                    Some(loaded) => Event::Loaded(hash, kind, loaded),
                    None if ask_peers => Event::Peer(peers::PeerEvent::Missing(hash, kind, limit)),
                    None => Event::Loaded(hash, kind, blobs::from_network(&url, hash, kind).await),
                });
            }),
            Err(e) => notify(Event::Loaded(hash, kind, Err((kind.fetch_failure(), e)))),
        }
    }

    /// Tells the coordinator which blobs this worker holds (its directory
    /// for peer transfers).
    pub(super) fn tell_have(&mut self, blobs: Vec<Sha256Hash>, from_peers: bool) {
        if self.welcomed_path().is_some() && self.opts.peers {
            // In messages the coordinator takes (it ends a session sending more).
            for chunk in blobs.chunks(idlecore_protocol::limits::MAX_HAVE_BLOBS) {
                self.send_msg(&WorkerMessage::Have(Have { blobs: chunk.to_vec(), from_peers }));
            }
        }
    }

    pub(super) fn on_loaded(&mut self, hash: Sha256Hash, kind: Kind, result: Result<blobs::Loaded, blobs::BlobError>) {
        self.loading.remove(&(hash, kind));
        match result {
            Ok((blob, size, source)) => {
                match source {
                    blobs::Source::Cache => self.status.modules_from_cache += 1,
                    blobs::Source::Network => self.status.bytes_in += size as u64,
                    // Bytes counted as they arrived (see `peers`).
                    blobs::Source::Peer if kind == Kind::Module => self.status.modules_from_peers += 1,
                    blobs::Source::Peer => {}
                }
                match blob {
                    blobs::Blob::Module(m) => self.modules.insert(hash, m, size),
                    blobs::Blob::Input(bytes) => {
                        let (_, pinned) = self.admitted();
                        self.inputs.insert_keeping(hash, bytes, size, |h| pinned.contains_key(h))
                    }
                };
                self.tell_have(vec![hash], source == blobs::Source::Peer);
                self.dispatch();
            }
            Err((failure, message)) => {
                let needs = |l: &Lease| match kind {
                    Kind::Module => l.module == hash,
                    Kind::Input => l.blobs.iter().any(|b| b.hash == hash),
                };
                let failed: Vec<Lease> = self.waiting.iter().filter(|l| needs(l)).cloned().collect();
                self.waiting.retain(|l| !needs(l));
                for l in failed {
                    self.fail(l.lease, (l.job, l.task), failure, message.clone());
                }
                self.load_waiting();
                self.publish();
            }
        }
    }
}
