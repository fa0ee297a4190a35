//! What waiting leases need: their module and input blobs, by hash. Which
//! leases are admitted under the input budget, what to load, what a load's
//! outcome does to the leases waiting on it. Compiled modules and inputs are
//! kept, least recently used evicted past their budgets; inputs of admitted
//! leases are never evicted before they run.

use crate::lru::Lru;
use crate::{Agent, Output};
use idlecore_protocol::{FailureKind, Lease, Sha256Hash};
use std::collections::{HashMap, HashSet};

/// What a blob is fetched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Module,
    Input,
}

impl Kind {
    /// How a lease fails when a blob of this kind cannot be had.
    pub fn fetch_failure(self) -> FailureKind {
        match self {
            Kind::Module => FailureKind::ModuleFetch,
            Kind::Input => FailureKind::InputFetch,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Input => "input",
        }
    }
}

/// Where a blob's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The coordinator, over HTTP.
    Network,
    /// The host's persistent cache.
    Cache,
    /// Another worker, over a data channel.
    Peer,
}

/// A loaded blob: a compiled module, or an input's bytes.
#[derive(Debug)]
pub enum Blob<M, I> {
    Module(M),
    Input(I),
}

/// A loaded blob, its size in bytes and where its bytes came from.
pub type Loaded<M, I> = (Blob<M, I>, usize, Source);

pub(crate) struct Blobs<M, I> {
    pub(crate) modules: Lru<Sha256Hash, M>,
    pub(crate) inputs: Lru<Sha256Hash, I>,
    /// Blobs being loaded.
    loading: HashSet<(Sha256Hash, Kind)>,
    module_budget: u64,
    input_budget: u64,
}

impl<M, I> Blobs<M, I> {
    pub(crate) fn new(module_budget: u64, input_budget: u64) -> Blobs<M, I> {
        let size = |b: u64| usize::try_from(b).unwrap_or(usize::MAX);
        Blobs {
            modules: Lru::new(size(module_budget)),
            inputs: Lru::new(size(input_budget)),
            loading: HashSet::new(),
            module_budget,
            input_budget,
        }
    }

    fn held(&self, hash: &Sha256Hash, kind: Kind) -> bool {
        match kind {
            Kind::Module => self.modules.contains(hash),
            Kind::Input => self.inputs.contains(hash),
        }
    }

    /// Every blob held (for `Have`).
    pub(crate) fn held_all(&self) -> impl Iterator<Item = Sha256Hash> + '_ {
        self.modules.keys().chain(self.inputs.keys()).copied()
    }

    pub(crate) fn ready(&self, lease: &Lease) -> bool {
        self.modules.contains(&lease.module) && lease.blobs.iter().all(|b| self.inputs.contains(&b.hash))
    }
}

impl<M: Clone, I: Clone> Agent<M, I> {
    /// The first waiting leases whose inputs fit the input budget together
    /// (the first lease always): how many, and their inputs with sizes.
    /// Only these load; their inputs are not evicted until they run, so
    /// later leases cannot push them out (and fetch them again).
    fn admitted(&self) -> (usize, HashMap<Sha256Hash, u64>) {
        let (mut n, mut inputs, mut total) = (0, HashMap::new(), 0u64);
        for l in &self.waiting {
            let more: u64 = l.blobs.iter().filter(|b| !inputs.contains_key(&b.hash)).map(|b| b.size).sum();
            if n > 0 && total + more > self.blobs.input_budget {
                break;
            }
            total += more;
            inputs.extend(l.blobs.iter().map(|b| (b.hash, b.size)));
            n += 1;
        }
        (n, inputs)
    }

    /// Loads what the admitted leases need and is neither held nor loading.
    pub(crate) fn load_waiting(&mut self) {
        let (n, _) = self.admitted();
        let needs: Vec<(Sha256Hash, Vec<(Sha256Hash, u64)>)> =
            self.waiting.iter().take(n).map(|l| (l.module, l.blobs.iter().map(|b| (b.hash, b.size)).collect())).collect();
        for (module, inputs) in needs {
            self.load(module, Kind::Module, self.blobs.module_budget);
            for (hash, size) in inputs {
                self.load(hash, Kind::Input, size);
            }
        }
    }

    /// Asks the host for a blob (`limit`: the most bytes a peer may send).
    fn load(&mut self, hash: Sha256Hash, kind: Kind, limit: u64) {
        if self.blobs.held(&hash, kind) || !self.blobs.loading.insert((hash, kind)) {
            return;
        }
        let welcomed = self.blob_path().map(str::to_string);
        let ask_peers = welcomed.is_some() && self.cfg.peers;
        // Before `Welcome` the coordinator's default path.
        let blob_path = welcomed.unwrap_or_else(|| "/blobs/".into());
        self.output.push_back(Output::Load { hash, kind, limit, blob_path, ask_peers });
    }

    pub(crate) fn on_loaded(&mut self, hash: Sha256Hash, kind: Kind, result: Result<Loaded<M, I>, (FailureKind, String)>) {
        self.blobs.loading.remove(&(hash, kind));
        match result {
            Ok((blob, size, source)) => {
                match source {
                    Source::Cache => self.status.modules_from_cache += 1,
                    Source::Network => self.status.bytes_in += size as u64,
                    // Bytes are counted by the host as they arrive.
                    Source::Peer if kind == Kind::Module => self.status.modules_from_peers += 1,
                    Source::Peer => {}
                }
                match blob {
                    Blob::Module(m) => {
                        self.blobs.modules.insert(hash, m, size);
                    }
                    Blob::Input(bytes) => {
                        let (_, pinned) = self.admitted();
                        self.blobs.inputs.insert_keeping(hash, bytes, size, |h| pinned.contains_key(h));
                    }
                }
                self.tell_have(vec![hash], source == Source::Peer);
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
                self.post_status(false);
            }
        }
    }
}
