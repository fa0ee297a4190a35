//! The coordinator connection over a WebRTC data channel, for networks that
//! block WebSockets. The page makes the peer connection (`peers.js`, peer id
//! [`COORDINATOR_PEER`]) and its offer; the agent POSTs the offer to the
//! coordinator's `/rtc` and hands the answer back (the coordinator is an
//! ICE-lite peer: it learns the browser's address from its checks, so no
//! candidates travel). Frames go as pieces (`idlecore_protocol::pieces`).

use super::SocketEvent;
use crate::agent::peers::Rtc;
use crate::peer_link::{LinkEvent, PeerLink};
use crate::status::post_rtc;
use idlecore_protocol::pieces::{self, Joiner};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The peer id the page's connection to the coordinator goes by.
pub const COORDINATOR_PEER: &str = "coordinator";

pub struct DataChannelSocket {
    endpoint: String,
    notify: Rc<dyn Fn(SocketEvent)>,
    link: Option<PeerLink>,
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
    /// Asks the page for a peer connection to the coordinator.
    pub fn connect(coordinator: &str, notify: Rc<dyn Fn(SocketEvent)>) -> Result<DataChannelSocket, JsValue> {
        let endpoint = rtc_endpoint(coordinator)?;
        post_rtc(&Rtc::Open { peer: COORDINATOR_PEER.into(), ice: Vec::new(), initiator: true });
        Ok(DataChannelSocket { endpoint, notify, link: None })
    }

    /// The page's news of this connection: its offer (sent on to the
    /// coordinator, whose answer goes back to the page), or its end.
    pub fn on_page(&mut self, rtc: Rtc) {
        match rtc {
            Rtc::Offer { sdp, .. } => {
                let (endpoint, notify) = (self.endpoint.clone(), self.notify.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    match exchange(&endpoint, &sdp).await {
                        Ok(answer) => post_rtc(&Rtc::Answer { peer: COORDINATOR_PEER.into(), sdp: answer }),
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
        let on_event = move |e| match e {
            LinkEvent::Open => notify(SocketEvent::Open),
            LinkEvent::Data(piece) => match joiner.borrow_mut().push(&piece) {
                Ok(Some(frame)) => notify(SocketEvent::Frame(frame)),
                Ok(None) => {}
                Err(e) => notify(SocketEvent::Closed { code: 0, reason: format!("the coordinator sent {e}") }),
            },
            LinkEvent::Drain => {}
            LinkEvent::Closed => notify(SocketEvent::Closed { code: 0, reason: "the data channel closed".into() }),
        };
        match PeerLink::new(end, Rc::new(on_event)) {
            Ok(link) => self.link = Some(link),
            Err(e) => (self.notify)(SocketEvent::Closed { code: 0, reason: format!("the data channel cannot be used: {e:?}") }),
        }
    }

    pub fn send(&self, frame: &[u8]) -> Result<(), JsValue> {
        let link = self.link.as_ref().ok_or_else(|| JsValue::from_str("the data channel is not open"))?;
        pieces::split(frame).try_for_each(|piece| link.send(&piece))
    }
}

impl Drop for DataChannelSocket {
    fn drop(&mut self) {
        self.link = None;
        post_rtc(&Rtc::Close { peer: COORDINATOR_PEER.into() });
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
