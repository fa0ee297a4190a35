//! Signaling: what passes between the page's peer connections and other
//! agents (through the coordinator), and the names the page knows them by.

use super::{Role, MAX_SERVING};
use crate::agent::Agent;
use crate::page;
use crate::page::Rtc;
use crate::transport::Socket;
use idlecore_protocol::{Signal, SignalPayload, WorkerMessage};

/// The page's name of a peer connection.
pub(super) fn key(peer: u64, n: u32) -> String {
    format!("{peer}.{n}")
}

pub(super) fn parse_key(key: &str) -> Option<(u64, u32)> {
    let (peer, n) = key.split_once('.')?;
    Some((peer.parse().ok()?, n.parse().ok()?))
}

impl Agent {
    /// The session's data channel socket, if the page's name `key` is its connection.
    pub(super) fn session_channel(&mut self, key: &str) -> Option<&mut crate::transport::DataChannelSocket> {
        match self.socket.as_mut().map(|(_, s)| s) {
            Some(Socket::DataChannel(dc)) if dc.key() == key => Some(dc),
            _ => None,
        }
    }

    /// A signal another agent sent through the coordinator.
    pub(in crate::agent) fn on_peer_signal(&mut self, Signal { peer, payload }: Signal) {
        match payload {
            SignalPayload::Close => self.end_conn(peer, Some("the peer closed the connection"), true),
            SignalPayload::Offer(sdp) => {
                match self.peers.conns.get(&peer).map(|c| matches!(c.role, Role::Serve { .. })) {
                    // A fresh start from a peer already served: the old connection goes.
                    Some(true) => self.end_conn(peer, None, true),
                    // Both sides offering: this agent's own fetch goes on.
                    Some(false) => return self.refuse(peer),
                    None => {}
                }
                // Peers turned off, paused (hidden, on battery, `pause()`) or sharing no CPU: serve no one.
                let willing = self.opts.peers && self.core.active() && self.welcomed_path().is_some();
                if !willing || self.peers.serving() >= MAX_SERVING {
                    return self.refuse(peer);
                }
                self.add_conn(peer, Role::Serve { out: None, asked: false }, false);
                page::post_rtc(&Rtc::Offer { peer: self.key_of(peer), sdp });
            }
            SignalPayload::Answer(sdp) if self.peers.conns.contains_key(&peer) => {
                page::post_rtc(&Rtc::Answer { peer: self.key_of(peer), sdp });
            }
            SignalPayload::Candidate(c) if self.peers.conns.contains_key(&peer) => {
                let (candidate, mid, mline) = (c.candidate, c.mid, c.mline);
                page::post_rtc(&Rtc::Candidate { peer: self.key_of(peer), candidate, mid, mline });
            }
            // For a connection already ended: nothing to do.
            SignalPayload::Answer(_) | SignalPayload::Candidate(_) => {}
        }
    }

    pub(super) fn refuse(&mut self, peer: u64) {
        self.send_msg(&WorkerMessage::Signal(Signal { peer, payload: SignalPayload::Close }));
    }

    pub(super) fn on_page_rtc(&mut self, rtc: Rtc) {
        let (peer, payload) = match rtc {
            Rtc::Offer { peer, sdp } => (peer, SignalPayload::Offer(sdp)),
            Rtc::Answer { peer, sdp } => (peer, SignalPayload::Answer(sdp)),
            Rtc::Candidate { peer, candidate, mid, mline } => {
                (peer, SignalPayload::Candidate(idlecore_protocol::IceCandidate { candidate, mid, mline }))
            }
            Rtc::Closed { peer, why } => {
                if let Some(peer) = self.peers.by_key(&peer) {
                    self.give_up_as(peer, &why, false);
                }
                return;
            }
            Rtc::Open { .. } | Rtc::Close { .. } => return,
        };
        let Some(peer) = self.peers.by_key(&peer) else {
            return;
        };
        let signal = Signal { peer, payload };
        // The coordinator would end this session over a signal past the limits.
        match idlecore_protocol::check_signal(&signal) {
            Ok(()) => self.send_msg(&WorkerMessage::Signal(signal)),
            Err(e) => self.give_up(peer, &format!("the page's signal is too large: {e}")),
        }
    }
}
