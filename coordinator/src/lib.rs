//! The idlecore coordinator: job owners' HTTP API, worker sessions over
//! WebSocket, the in-memory scheduler, and the durable SQLite store.

pub mod api;
pub mod auth;
pub mod browser;
pub mod cli;
pub mod client;
pub mod comparators;
pub mod error;
pub mod input_blobs;
pub mod jobs;
pub mod model;
pub mod outbox;
pub mod peers;
#[cfg(feature = "webrtc")]
pub mod rtc;
pub mod sabotage;
pub mod sandbox;
pub mod scheduler;
pub mod server;
pub mod sessions;
pub mod state;
pub mod store;
pub mod validate;
