//! The coordinator connection: a WebSocket (`websocket`), or a WebRTC data
//! channel the page opens to the coordinator (`data_channel`) where
//! WebSockets are blocked. Both carry whole protocol frames and report the
//! same events.

mod data_channel;
mod websocket;

pub use data_channel::{rtc_endpoint, DataChannelSocket, COORDINATOR_PEER};
pub use websocket::WebSocketConn;

use wasm_bindgen::JsValue;

pub enum SocketEvent {
    Open,
    Frame(Vec<u8>),
    /// The connection closed (or failed to open); no more events follow.
    Closed {
        code: u16,
        reason: String,
    },
}

pub enum Socket {
    WebSocket(WebSocketConn),
    DataChannel(DataChannelSocket),
}

impl Socket {
    pub fn send(&self, frame: &[u8]) -> Result<(), JsValue> {
        match self {
            Socket::WebSocket(ws) => ws.send(frame),
            Socket::DataChannel(dc) => dc.send(frame),
        }
    }
}
