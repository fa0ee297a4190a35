//! Blobs (modules and task inputs) from other visitors over WebRTC data
//! channels, and blobs for them.
//!
//! Fetching: a blob missing from the persistent cache is asked for with
//! `Want`. The coordinator answers `Sources` (peers holding it, now
//! introduced). The agent asks the page to open a peer connection to the
//! first one, relays the signals between the page and the coordinator,
//! requests the module on the data channel and feeds the answer to
//! [`Fetch`] (size limit, SHA-256). Any failure (no sources, `Close`, a bad
//! message, no progress for [`STALL_MS`], the session ending) falls back to
//! HTTP from the coordinator at once.
//!
//! Serving: an offer from a peer gets a connection while the agent is active
//! (at most [`MAX_SERVING`] at once; the coordinator relays only between peers it introduced) and a
//! request is answered from the inputs in memory or the persistent module
//! cache, a chunk at a time as the channel drains.

use super::blobs::{self, Kind};
use super::{Agent, Event};
use crate::blob_transfer::{self, Fetch, Outgoing, Progress};
use crate::page;
use crate::peer_link::{LinkEvent, PeerLink};
use crate::transport::COORDINATOR_PEER;
use gloo_timers::callback::Timeout;
use idlecore_protocol::{Sha256Hash, Sources, Want, WorkerMessage};
use std::collections::HashMap;
use wasm_bindgen::JsValue;

mod signals;
use crate::page::Rtc;
use signals::{key, parse_key};

/// A connection that moves nothing for this long is given up.
pub const STALL_MS: u32 = 5_000;
/// How long `Sources` may take before the blob is fetched over HTTP.
const SOURCES_MS: u32 = 3_000;
/// Peers served at once; further offers are turned down.
pub const MAX_SERVING: usize = 4;
/// Chunks are handed to a channel while it buffers less than this.
const HIGH_WATER: f64 = 256.0 * 1024.0;

pub enum PeerEvent {
    /// Not in the persistent cache: ask peers, then the coordinator. The
    /// most bytes a peer may send for it.
    Missing(Sha256Hash, Kind, u64),
    /// `Sources` did not come in time.
    NoSources(Sha256Hash),
    /// From the page: a signal for the peer, or the connection's end.
    Page(Rtc),
    /// From the page: a connection's data channel (or its relay port).
    Channel(String, JsValue),
    /// Each of the rest names a connection: the peer and the connection's number.
    Link(u64, u32, LinkEvent),
    /// The bytes a peer asked for, read from the persistent cache.
    Read(u64, u32, Option<Vec<u8>>),
    /// A connection's stall timer ran out: check its progress.
    Stalled(u64, u32),
}

/// What a data-channel event leads to.
enum Step {
    Wait,
    Pump,
    Fetched(Sha256Hash, Kind, u64, Vec<u8>),
    /// A peer asked for this blob: read it from memory or the cache.
    Read(Sha256Hash),
}

enum Role {
    Fetch {
        blob: Sha256Hash,
        kind: Kind,
        limit: u64,
        fetch: Fetch,
    },
    /// `out` is set once the request was read; `asked` once it arrived.
    Serve {
        out: Option<Outgoing>,
        asked: bool,
    },
}

struct Conn {
    /// Which connection to this peer it is.
    n: u32,
    role: Role,
    link: Option<PeerLink>,
    /// Set when the link reports open. A channel moved to this Worker may
    /// deliver the peer's request before its own state is `open` (sending
    /// then throws), so a serve waits for this.
    open: bool,
    /// Blobs to fetch from this peer once the current fetch is done (a
    /// module and its task's input often come from the same holder).
    then: Vec<(Sha256Hash, Kind, u64)>,
    /// When the connection last moved something.
    progress_ms: f64,
    _stall: Timeout,
}

/// The agent's peer connections and outstanding `Want`s.
#[derive(Default)]
pub struct Peers {
    conns: HashMap<u64, Conn>,
    /// Blobs asked for: what for, the most bytes a peer may send, and the
    /// timer for `Sources`.
    asked: HashMap<Sha256Hash, (Kind, u64, Timeout)>,
    /// Connections made so far (numbers them).
    made: u32,
}

impl Peers {
    /// The connection `n` to `peer`, if it is still the current one.
    fn conn(&mut self, peer: u64, n: u32) -> Option<&mut Conn> {
        self.conns.get_mut(&peer).filter(|c| c.n == n)
    }

    /// The current connection the page's name `key` stands for.
    fn by_key(&self, key: &str) -> Option<u64> {
        let (peer, n) = parse_key(key)?;
        self.conns.get(&peer).filter(|c| c.n == n).map(|_| peer)
    }

    fn serving(&self) -> usize {
        self.conns.values().filter(|c| matches!(c.role, Role::Serve { .. })).count()
    }
}

fn now_ms() -> f64 {
    crate::executor::now_ms()
}

impl Agent {
    /// Downloads a blob from the coordinator (the fallback for every peer failure).
    pub(super) fn download(&mut self, hash: Sha256Hash, kind: Kind, limit: u64) {
        let notify = self.notify.clone();
        match self.blob_url(&hash) {
            Ok(url) => wasm_bindgen_futures::spawn_local(async move {
                notify(Event::Loaded(hash, kind, blobs::from_network(&url, hash, kind, limit).await));
            }),
            Err(e) => notify(Event::Loaded(hash, kind, Err((kind.fetch_failure(), e)))),
        }
    }

    fn stall_timer(&self, peer: u64, n: u32, ms: u32) -> Timeout {
        let notify = self.notify.clone();
        Timeout::new(ms, move || notify(Event::Peer(PeerEvent::Stalled(peer, n))))
    }

    /// The page's name of the current connection to `peer`.
    fn key_of(&self, peer: u64) -> String {
        key(peer, self.peers.conns.get(&peer).map_or(0, |c| c.n))
    }

    fn add_conn(&mut self, peer: u64, role: Role, initiator: bool) {
        self.peers.made += 1;
        let n = self.peers.made;
        let stall = self.stall_timer(peer, n, STALL_MS);
        self.peers.conns.insert(peer, Conn { n, role, link: None, open: false, then: Vec::new(), progress_ms: now_ms(), _stall: stall });
        let ice = self.core.ice_servers().to_vec();
        page::post_rtc(&Rtc::Open { peer: key(peer, n), ice, initiator });
    }

    pub(super) fn on_peer(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Missing(hash, kind, limit) => {
                // One question per hash: the same blob wanted as both a module and an input comes over HTTP.
                if self.welcomed_path().is_some() && !self.peers.asked.contains_key(&hash) {
                    self.send_msg(&WorkerMessage::Want(Want { blob: hash }));
                    let notify = self.notify.clone();
                    let timer = Timeout::new(SOURCES_MS, move || notify(Event::Peer(PeerEvent::NoSources(hash))));
                    self.peers.asked.insert(hash, (kind, limit, timer));
                } else {
                    self.download(hash, kind, limit);
                }
            }
            PeerEvent::NoSources(hash) => {
                if let Some((kind, limit, _)) = self.peers.asked.remove(&hash) {
                    self.download(hash, kind, limit);
                }
            }
            PeerEvent::Page(rtc) if rtc.peer().starts_with(COORDINATOR_PEER) => {
                if let Some(dc) = self.session_channel(rtc.peer()) {
                    dc.on_page(rtc);
                }
            }
            PeerEvent::Channel(name, end) if name.starts_with(COORDINATOR_PEER) => {
                match self.session_channel(&name) {
                    Some(dc) => dc.on_channel(&end),
                    // Not asked for (an ended session's).
                    None => PeerLink::close_unwanted(&end),
                }
            }
            PeerEvent::Page(rtc) => self.on_page_rtc(rtc),
            PeerEvent::Channel(name, end) => {
                let notify = self.notify.clone();
                let current = self.peers.by_key(&name);
                let Some((peer, conn)) =
                    current.and_then(|p| self.peers.conns.get_mut(&p).map(|c| (p, c))).filter(|(_, c)| c.link.is_none())
                else {
                    PeerLink::close_unwanted(&end);
                    return;
                };
                let n = conn.n;
                match PeerLink::new(&end, std::rc::Rc::new(move |e| notify(Event::Peer(PeerEvent::Link(peer, n, e))))) {
                    Ok(link) => conn.link = Some(link),
                    Err(e) => self.give_up(peer, &format!("the data channel cannot be used: {e:?}")),
                }
            }
            PeerEvent::Link(peer, n, e) => {
                if self.peers.conn(peer, n).is_some() {
                    self.on_link(peer, e);
                }
            }
            PeerEvent::Read(peer, n, bytes) => {
                if let Some(Role::Serve { out, .. }) = self.peers.conn(peer, n).map(|c| &mut c.role) {
                    *out = Some(Outgoing::new(bytes));
                    self.pump(peer);
                }
            }
            PeerEvent::Stalled(peer, n) => {
                let Some(since) = self.peers.conn(peer, n).map(|c| now_ms() - c.progress_ms) else {
                    return;
                };
                if since >= STALL_MS as f64 {
                    self.give_up(peer, &format!("no progress for {} s", STALL_MS / 1000));
                } else {
                    let timer = self.stall_timer(peer, n, (STALL_MS as f64 - since) as u32 + 1);
                    if let Some(c) = self.peers.conn(peer, n) {
                        c._stall = timer;
                    }
                }
            }
        }
    }

    /// Ends the peers being served (the agent was paused or its share set to 0).
    pub(super) fn stop_serving(&mut self) {
        let serving: Vec<u64> = self.peers.conns.iter().filter(|(_, c)| matches!(c.role, Role::Serve { .. })).map(|(p, _)| *p).collect();
        for peer in serving {
            self.give_up(peer, "paused");
        }
    }

    /// The coordinator named peers holding a blob this agent asked for.
    pub(super) fn on_sources(&mut self, sources: Sources) {
        let Some((kind, limit, _)) = self.peers.asked.remove(&sources.blob) else {
            return; // Late: the blob is already coming over HTTP.
        };
        let Some(peer) = sources.peers.first().copied() else {
            return self.download(sources.blob, kind, limit);
        };
        // One connection per peer at a time: a second blob from the same
        // holder waits for the first, then gets a connection of its own.
        match self.peers.conns.get_mut(&peer) {
            None => self.fetch_from(peer, sources.blob, kind, limit),
            Some(Conn { role: Role::Fetch { .. }, then, .. }) => then.push((sources.blob, kind, limit)),
            // Serving that peer: not both ways at once.
            Some(_) => self.download(sources.blob, kind, limit),
        }
    }

    fn fetch_from(&mut self, peer: u64, blob: Sha256Hash, kind: Kind, limit: u64) {
        let fetch = Fetch::new(blob, limit);
        self.add_conn(peer, Role::Fetch { blob, kind, limit, fetch }, true);
    }

    fn on_link(&mut self, peer: u64, event: LinkEvent) {
        let Some(conn) = self.peers.conns.get_mut(&peer) else {
            return;
        };
        conn.progress_ms = now_ms();
        conn.open |= matches!(event, LinkEvent::Open);
        let link = conn.link.as_ref();
        let step = match (event, &mut conn.role) {
            (LinkEvent::Closed, _) => Err("the data channel closed".to_string()),
            (LinkEvent::Open, Role::Fetch { blob, .. }) => link
                .map_or(Ok(()), |l| l.send(&blob_transfer::request(blob)))
                .map(|()| Step::Wait)
                .map_err(|e| format!("sending the request failed: {e:?}")),
            (LinkEvent::Data(bytes), Role::Fetch { blob, kind, limit, fetch }) => match fetch.on_message(&bytes) {
                Ok(Progress::Pending { .. }) => Ok(Step::Wait),
                Ok(Progress::Done(bytes)) => Ok(Step::Fetched(*blob, *kind, *limit, bytes)),
                Err(e) => Err(e.to_string()),
            },
            (LinkEvent::Data(bytes), Role::Serve { asked, .. }) => {
                let first = !std::mem::replace(asked, true);
                match blob_transfer::requested(&bytes) {
                    Ok(hash) if first => Ok(Step::Read(hash)),
                    Ok(_) => Err("a second request".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            (LinkEvent::Open | LinkEvent::Drain, Role::Serve { .. }) => Ok(Step::Pump),
            (LinkEvent::Drain, _) => Ok(Step::Wait),
        };
        match step {
            Err(why) => self.give_up(peer, &why),
            Ok(Step::Wait) => {}
            Ok(Step::Pump) => self.pump(peer),
            Ok(Step::Fetched(hash, kind, limit, bytes)) => {
                self.core.status_mut().bytes_from_peers += bytes.len() as u64;
                self.end_conn(peer, None, true);
                match self.blob_url(&hash) {
                    Ok(url) => {
                        let notify = self.notify.clone();
                        wasm_bindgen_futures::spawn_local(async move {
                            notify(Event::Loaded(hash, kind, blobs::from_peer(&url, bytes, kind).await));
                        });
                    }
                    Err(_) => self.download(hash, kind, limit),
                }
            }
            Ok(Step::Read(hash)) => {
                let notify = self.notify.clone();
                let n = self.peers.conns.get(&peer).map_or(0, |c| c.n);
                if let Some(input) = self.core.input(&hash) {
                    return notify(Event::Peer(PeerEvent::Read(peer, n, Some(input.to_vec()))));
                }
                match self.blob_url(&hash) {
                    Ok(url) => wasm_bindgen_futures::spawn_local(async move {
                        let bytes = match blobs::open_cache().await {
                            Some(cache) => blobs::cached_bytes(&cache, &url).await,
                            None => None,
                        };
                        notify(Event::Peer(PeerEvent::Read(peer, n, bytes)));
                    }),
                    Err(e) => self.give_up(peer, &e),
                }
            }
        }
    }

    /// Hands the served blob's next chunks to the channel while it has room.
    fn pump(&mut self, peer: u64) {
        let Some(conn) = self.peers.conns.get_mut(&peer) else {
            return;
        };
        let (Some(link), true, Role::Serve { out: Some(out), .. }) = (&conn.link, conn.open, &mut conn.role) else {
            return;
        };
        let start = out.sent();
        let mut failed = None;
        while link.buffered() < HIGH_WATER {
            let Some(chunk) = out.next_chunk() else { break };
            if let Err(e) = link.send(&chunk) {
                failed = Some(format!("sending failed: {e:?}"));
                break;
            }
        }
        let sent = (out.sent() - start) as u64;
        if sent > 0 {
            conn.progress_ms = now_ms();
            self.core.status_mut().bytes_to_peers += sent;
            self.core.publish();
        }
        if let Some(why) = failed {
            self.give_up(peer, &why);
        }
    }

    /// Ends a connection for a reason of this side's own, telling the peer
    /// (unless it was served the whole blob already: a `Close` now could only
    /// end its next connection to this agent).
    fn give_up(&mut self, peer: u64, why: &str) {
        self.give_up_as(peer, why, true);
    }

    /// `give_up`, closing the page's side only if `tell_page` (not when the
    /// page reported the end itself).
    fn give_up_as(&mut self, peer: u64, why: &str, tell_page: bool) {
        if let Some(conn) = self.peers.conns.get(&peer) {
            let serving = matches!(&conn.role, Role::Serve { .. });
            let served = matches!(&conn.role, Role::Serve { out: Some(out), .. } if out.finished());
            if !served {
                self.refuse(peer);
                if serving {
                    // A fetch's failure is reported by `end_conn`; a serve's is kept here.
                    self.core.status_mut().last_error = Some(format!("serving a peer: {why}"));
                }
            }
            self.end_conn(peer, Some(why), tell_page);
        }
    }

    /// Forgets a connection (closing the page's side if `tell_page`). A fetch
    /// that `failed` falls back to HTTP, and why is kept as the last error.
    fn end_conn(&mut self, peer: u64, failed: Option<&str>, tell_page: bool) {
        let Some(mut conn) = self.peers.conns.remove(&peer) else {
            return;
        };
        drop(conn.link.take());
        if tell_page {
            page::post_rtc(&Rtc::Close { peer: key(peer, conn.n) });
        }
        // Blobs waiting for this connection: the next gets one of its own
        // after a fetch that worked; all come over HTTP after a failure.
        let mut then = std::mem::take(&mut conn.then).into_iter();
        if failed.is_none() && self.core.has_session() {
            if let Some((blob, kind, limit)) = then.next() {
                self.fetch_from(peer, blob, kind, limit);
                if let Some(next) = self.peers.conns.get_mut(&peer) {
                    next.then = then.by_ref().collect();
                }
            }
        }
        for (blob, kind, limit) in then {
            self.download(blob, kind, limit);
        }
        if let (Role::Fetch { blob, kind, limit, .. }, Some(why)) = (conn.role, failed) {
            self.core.status_mut().peer_fallbacks += 1;
            self.core.status_mut().last_error = Some(format!("fetching {} {} from a peer: {why}", kind.name(), &blob.to_hex()[..16]));
            self.core.publish();
            self.download(blob, kind, limit);
        }
    }

    /// The session ended: connections need its signaling, so they end too.
    pub(super) fn end_peers(&mut self) {
        for (hash, (kind, limit, _)) in std::mem::take(&mut self.peers.asked) {
            self.download(hash, kind, limit);
        }
        for peer in self.peers.conns.keys().copied().collect::<Vec<_>>() {
            self.end_conn(peer, Some("the coordinator session ended"), true);
        }
    }
}
