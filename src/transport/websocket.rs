//! The coordinator connection over a WebSocket carrying binary protocol
//! frames. Its event listeners are owned by [`WebSocketConn`] and removed
//! when it is dropped (which also closes the socket).

use super::SocketEvent;
use gloo_events::EventListener;
use js_sys::{ArrayBuffer, Uint8Array};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

pub struct WebSocketConn {
    ws: WebSocket,
    _listeners: [EventListener; 3],
}

impl WebSocketConn {
    pub fn connect(url: &str, notify: Rc<dyn Fn(SocketEvent)>) -> Result<WebSocketConn, JsValue> {
        let ws = WebSocket::new(url)?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let n = notify.clone();
        let on_open = EventListener::new(&ws, "open", move |_| n(SocketEvent::Open));
        let n = notify.clone();
        let on_message = EventListener::new(&ws, "message", move |e| {
            // Text frames are not part of the protocol; an empty frame fails decoding.
            let data = e.dyn_ref::<MessageEvent>().map(MessageEvent::data);
            let bytes = data.and_then(|d| d.dyn_into::<ArrayBuffer>().ok()).map(|b| Uint8Array::new(&b).to_vec()).unwrap_or_default();
            n(SocketEvent::Frame(bytes));
        });
        let on_close = EventListener::new(&ws, "close", move |e| {
            let (code, reason) = e.dyn_ref::<CloseEvent>().map_or((0, String::new()), |e| (e.code(), e.reason()));
            notify(SocketEvent::Closed { code, reason })
        });
        Ok(WebSocketConn { ws, _listeners: [on_open, on_message, on_close] })
    }

    pub fn send(&self, frame: &[u8]) -> Result<(), JsValue> {
        self.ws.send_with_u8_array(frame)
    }
}

impl Drop for WebSocketConn {
    fn drop(&mut self) {
        // The listeners go with the struct; no event of this socket reaches the agent again.
        let _ = self.ws.close();
    }
}
