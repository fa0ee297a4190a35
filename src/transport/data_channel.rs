//! The coordinator connection over a WebRTC data channel, for networks that
//! block WebSockets. The page makes the peer connection (`peers.js`, named
//! `coordinator.{n}` for the agent's `n`th session) and its offer; the agent
//! POSTs the offer to the coordinator's `/rtc` and hands the answer back (the
//! coordinator is an ICE-lite peer: it learns the browser's address from its
//! checks, so no candidates travel). Frames go as pieces
//! (`idlecore_protocol::pieces`), handed to the channel while it buffers
//! less than [`HIGH_WATER`].

use super::SocketEvent;
use crate::page::{post_rtc, Rtc};
use crate::peer_link::{LinkEvent, PeerLink};
use idlecore_protocol::pieces::{self, Joiner};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// How the page's connections to the coordinator are named (then `.{n}`).
pub const COORDINATOR_PEER: &str = "coordinator";

/// Pieces are handed to the channel while it buffers less than this.
pub const HIGH_WATER: f64 = 1024.0 * 1024.0;

pub struct DataChannelSocket {
    key: String,
    endpoint: String,
    notify: Rc<dyn Fn(SocketEvent)>,
    outbox: Rc<RefCell<Outbox>>,
}

/// The channel and the pieces waiting for room in it.
#[derive(Default)]
struct Outbox {
    link: Option<PeerLink>,
    queue: VecDeque<Vec<u8>>,
}

impl Outbox {
    fn pump(&mut self) -> Result<(), JsValue> {
        let Some(link) = &self.link else { return Ok(()) };
        while link.buffered() < HIGH_WATER {
            let Some(piece) = self.queue.pop_front() else { break };
            link.send(&piece)?;
        }
        Ok(())
    }
}

/// `ws://host/path/ws?site=k` → `http://host/path/rtc?site=k`.
pub fn rtc_endpoint(coordinator: &str) -> Result<String, JsValue> {
    let url = web_sys::Url::new(coordinator)?;
    url.set_protocol(if url.protocol() == "wss:" { "https:" } else { "http:" });
    let path = url.pathname();
    url.set_pathname(&format!("{}rtc", &path[..path.rfind('/').map_or(0, |i| i + 1)]));
    Ok(url.href())
}

impl DataChannelSocket {
    /// Asks the page for a peer connection to the coordinator, the agent's `n`th.
    pub fn connect(coordinator: &str, n: u32, notify: Rc<dyn Fn(SocketEvent)>) -> Result<DataChannelSocket, JsValue> {
        let endpoint = rtc_endpoint(coordinator)?;
        let key = format!("{COORDINATOR_PEER}.{n}");
        post_rtc(&Rtc::Open { peer: key.clone(), ice: Vec::new(), initiator: true });
        Ok(DataChannelSocket { key, endpoint, notify, outbox: Default::default() })
    }

    /// The page's name of this connection.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The page's news of this connection: its offer (sent on to the
    /// coordinator, whose answer goes back to the page), or its end.
    pub fn on_page(&mut self, rtc: Rtc) {
        match rtc {
            Rtc::Offer { sdp, .. } => {
                let (endpoint, notify, key) = (self.endpoint.clone(), self.notify.clone(), self.key.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    match exchange(&endpoint, &sdp).await {
                        Ok(answer) => post_rtc(&Rtc::Answer { peer: key, sdp: answer }),
                        Err(reason) => notify(SocketEvent::Closed { code: 0, reason }),
                    }
                });
            }
            Rtc::Closed { why, .. } => (self.notify)(SocketEvent::Closed { code: 0, reason: why }),
            // The page's candidates: the coordinator needs none (ICE-lite).
            _ => {}
        }
    }

    /// The connection's data channel, handed over by the page.
    pub fn on_channel(&mut self, end: &JsValue) {
        let notify = self.notify.clone();
        let joiner = RefCell::new(Joiner::new(idlecore_protocol::MAX_FRAME_BYTES));
        // The link owns this callback, and the outbox owns the link: a weak reference, no cycle.
        let outbox: Weak<RefCell<Outbox>> = Rc::downgrade(&self.outbox);
        let on_event = move |e| match e {
            LinkEvent::Open => notify(SocketEvent::Open),
            LinkEvent::Data(piece) => match joiner.borrow_mut().push(&piece) {
                Ok(Some(frame)) => notify(SocketEvent::Frame(frame)),
                Ok(None) => {}
                Err(e) => notify(SocketEvent::Closed { code: 0, reason: format!("the coordinator sent {e}") }),
            },
            LinkEvent::Drain => {
                let sent = outbox.upgrade().map_or(Ok(()), |o| o.borrow_mut().pump());
                if let Err(e) = sent {
                    notify(SocketEvent::Closed { code: 0, reason: format!("sending on the data channel: {e:?}") });
                }
            }
            LinkEvent::Closed => notify(SocketEvent::Closed { code: 0, reason: "the data channel closed".into() }),
        };
        match PeerLink::new(end, Rc::new(on_event)) {
            Ok(link) => self.outbox.borrow_mut().link = Some(link),
            Err(e) => (self.notify)(SocketEvent::Closed { code: 0, reason: format!("the data channel cannot be used: {e:?}") }),
        }
    }

    /// Queues a frame's pieces and hands the channel what it has room for.
    pub fn send(&self, frame: &[u8]) -> Result<(), JsValue> {
        let mut outbox = self.outbox.borrow_mut();
        if outbox.link.is_none() {
            return Err(JsValue::from_str("the data channel is not open"));
        }
        outbox.queue.extend(pieces::split(frame));
        outbox.pump()
    }
}

impl Drop for DataChannelSocket {
    fn drop(&mut self) {
        self.outbox.borrow_mut().link = None;
        post_rtc(&Rtc::Close { peer: self.key.clone() });
    }
}

/// POSTs the offer; the coordinator's answer, or why there is none.
async fn exchange(endpoint: &str, offer: &str) -> Result<String, String> {
    let fail = |e: JsValue| format!("offering to {endpoint}: {}", e.as_string().unwrap_or_else(|| format!("{e:?}")));
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(offer));
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp: web_sys::Response = JsFuture::from(scope.fetch_with_str_and_init(endpoint, &init)).await.map_err(fail)?.unchecked_into();
    let text = JsFuture::from(resp.text().map_err(fail)?).await.map_err(fail)?.as_string().unwrap_or_default();
    if !resp.ok() {
        return Err(format!("offering to {endpoint}: HTTP {}: {text}", resp.status()));
    }
    Ok(text)
}
