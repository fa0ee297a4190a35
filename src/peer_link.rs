//! A data channel to another visitor's agent, as the page handed it over
//! (moved whole, or relayed over a `MessagePort`; `js/peer_link.js` makes
//! both look alike). The callbacks are owned here and the channel is closed
//! when the [`PeerLink`] is dropped.

use js_sys::Uint8Array;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/src/js/peer_link.js")]
extern "C" {
    #[wasm_bindgen(js_name = PeerLink)]
    type RawLink;

    #[wasm_bindgen(constructor, js_class = PeerLink, catch)]
    fn new(end: &JsValue, on_open: &JsValue, on_data: &JsValue, on_drain: &JsValue, on_close: &JsValue) -> Result<RawLink, JsValue>;

    #[wasm_bindgen(method, catch, js_class = PeerLink)]
    fn send(this: &RawLink, bytes: &[u8]) -> Result<(), JsValue>;

    #[wasm_bindgen(method, js_class = PeerLink)]
    fn buffered(this: &RawLink) -> f64;

    #[wasm_bindgen(method, catch, js_class = PeerLink)]
    fn close(this: &RawLink) -> Result<(), JsValue>;
}

pub enum LinkEvent {
    /// The channel is open: messages can go.
    Open,
    Data(Vec<u8>),
    /// The channel's buffer drained below its low-water mark.
    Drain,
    /// The channel closed (a relayed channel's end comes from the page instead).
    Closed,
}

pub struct PeerLink {
    raw: RawLink,
    _on_open: Closure<dyn FnMut()>,
    _on_data: Closure<dyn FnMut(Uint8Array)>,
    _on_drain: Closure<dyn FnMut()>,
    _on_close: Closure<dyn FnMut()>,
}

impl PeerLink {
    /// Takes over `end` (an `RTCDataChannel` or a `MessagePort` from the page).
    pub fn new(end: &JsValue, notify: Rc<dyn Fn(LinkEvent)>) -> Result<PeerLink, JsValue> {
        let n = notify.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || n(LinkEvent::Open));
        let n = notify.clone();
        let on_data = Closure::<dyn FnMut(Uint8Array)>::new(move |bytes: Uint8Array| n(LinkEvent::Data(bytes.to_vec())));
        let n = notify.clone();
        let on_drain = Closure::<dyn FnMut()>::new(move || n(LinkEvent::Drain));
        let n = notify;
        let on_close = Closure::<dyn FnMut()>::new(move || n(LinkEvent::Closed));
        let raw = RawLink::new(end, on_open.as_ref(), on_data.as_ref(), on_drain.as_ref(), on_close.as_ref())?;
        Ok(PeerLink { raw, _on_open: on_open, _on_data: on_data, _on_drain: on_drain, _on_close: on_close })
    }

    /// Closes a channel the page handed over that nothing here wants (taking
    /// it over and dropping the link closes it).
    pub fn close_unwanted(end: &JsValue) {
        drop(PeerLink::new(end, Rc::new(|_| {})));
    }

    pub fn send(&self, bytes: &[u8]) -> Result<(), JsValue> {
        self.raw.send(bytes)
    }

    /// Bytes handed to the channel and not yet sent.
    pub fn buffered(&self) -> f64 {
        self.raw.buffered()
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        let _ = self.raw.close();
    }
}
