//! The coordinator connection over a WebSocket carrying binary protocol
//! frames. Event handlers are owned by [`WebSocketConn`] and removed when it
//! is dropped.

use super::SocketEvent;
use js_sys::{ArrayBuffer, Uint8Array};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

pub struct WebSocketConn {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl WebSocketConn {
    pub fn connect(url: &str, notify: Rc<dyn Fn(SocketEvent)>) -> Result<WebSocketConn, JsValue> {
        let ws = WebSocket::new(url)?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let n = notify.clone();
        let on_open = Closure::<dyn FnMut(Event)>::new(move |_| n(SocketEvent::Open));
        let n = notify.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            // Text frames are not part of the protocol; an empty frame fails decoding.
            let bytes = e.data().dyn_into::<ArrayBuffer>().map(|b| Uint8Array::new(&b).to_vec()).unwrap_or_default();
            n(SocketEvent::Frame(bytes));
        });
        let n = notify;
        let on_close =
            Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| n(SocketEvent::Closed { code: e.code(), reason: e.reason() }));
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(WebSocketConn { ws, _on_open: on_open, _on_message: on_message, _on_close: on_close })
    }

    pub fn send(&self, frame: &[u8]) -> Result<(), JsValue> {
        self.ws.send_with_u8_array(frame)
    }
}

impl Drop for WebSocketConn {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}
