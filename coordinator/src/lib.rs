//! The idlecore coordinator: job owners' HTTP API, worker sessions over
//! WebSocket and WebRTC data channels, the in-memory scheduler, and the
//! durable SQLite store.
//!
//! Layers, each importing only those below it:
//!
//! | layer | what it holds |
//! | --- | --- |
//! | [`server`] | opening the store, restoring jobs, serving until shutdown: `Server::open(config)`, then `run(listener, shutdown)` |
//! | [`net`] | the network edges: HTTP routes (auth as an extractor, errors turned into HTTP here only), worker sessions, the data-channel hub, client addresses, origins and site keys |
//! | [`services`] | what the edges call: jobs, blobs, peers, comparisons, the job-owner token, and the hub that drives the scheduler and delivers its output |
//! | [`store`], [`sandbox`] | SQLite behind one writer thread; module checks, instrumentation and the comparator runtime |
//! | [`domain`] | no I/O, no clock: the model, validation rules, the peer directory and the sans-IO scheduler |

pub mod domain;
pub mod net;
pub mod sandbox;
pub mod server;
pub mod services;
pub mod store;
