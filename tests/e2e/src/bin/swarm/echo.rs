//! `swarm --echo`: the baseline the coordinator is measured against. It speaks
//! the coordinator's side of the protocol with nothing behind it: no
//! scheduler, no store, no checks. A result is answered at once with its
//! `Ack` and the next lease, so the swarm against it measures what the
//! transport alone costs (WebSocket frames on loopback, encoding, one event
//! loop per side).
//!
//! It prints `listening on HOST:PORT`, then waits for `go N` on stdin: from
//! then on, N leases are handed out in all, one per free worker.

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use idlecore_protocol::*;
use std::io::BufRead;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

struct Shared {
    /// Leases still to hand out.
    remaining: AtomicI64,
    next_lease: AtomicU64,
}

impl Shared {
    /// The next lease, shaped like the coordinator's for a tiny task, if any is left.
    fn lease(&self) -> Option<Vec<u8>> {
        if self.remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
            return None;
        }
        let id = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let lease = Lease {
            // 128 bits, as the coordinator's ids are: the same bytes on the wire.
            lease: (id as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) | 1 << 127,
            job: 1,
            task: id as u32,
            module: idlecore_protocol::Sha256Hash([7; 32]),
            stdin: b"1".to_vec(),
            args: vec![],
            env: vec![],
            limits: TaskLimits { timeout_ms: 60_000, max_output_bytes: 4 << 20, max_memory_pages: 4096, fuel: 0 },
            seed: id,
            deterministic: true,
            dirs: vec![
                TaskDir { guest: "/input".into(), writable: false, files: vec![] },
                TaskDir { guest: "/output".into(), writable: true, files: vec![] },
            ],
            blobs: vec![],
        };
        Some(encode_coordinator(&CoordinatorMessage::Lease(lease)))
    }
}

async fn session(stream: tokio::net::TcpStream, shared: Arc<Shared>, mut go: watch::Receiver<bool>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let Some(Ok(Message::Binary(_hello))) = ws.next().await else { return Ok(()) };
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        session: 0,
        heartbeat_ms: 30_000,
        blob_path: "/blobs/".into(),
        max_frame: MAX_FRAME_BYTES as u32,
        ice_servers: vec![],
        resume: [0; 24],
    };
    ws.send(Message::Binary(encode_coordinator(&CoordinatorMessage::Welcome(welcome)).into())).await?;
    go.wait_for(|started| *started).await?;
    if let Some(lease) = shared.lease() {
        ws.send(Message::Binary(lease.into())).await?;
    }
    while let Some(frame) = ws.next().await {
        let Message::Binary(bytes) = frame? else { continue };
        if let WorkerMessage::Result(r) = decode_worker(&bytes)? {
            ws.feed(Message::Binary(encode_coordinator(&CoordinatorMessage::Ack(Ack { lease: r.lease })).into())).await?;
            if let Some(lease) = shared.lease() {
                ws.feed(Message::Binary(lease.into())).await?;
            }
            ws.flush().await?;
        }
    }
    Ok(())
}

pub async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    let shared = Arc::new(Shared { remaining: AtomicI64::new(0), next_lease: AtomicU64::new(1) });
    let (go_tx, go) = watch::channel(false);
    let starter = shared.clone();
    // `go N` on stdin starts the leases; stdin closing ends the server.
    let (done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("go ").and_then(|n| n.trim().parse::<i64>().ok()) {
                starter.remaining.store(n, Ordering::Relaxed);
                let _ = go_tx.send(true);
            }
        }
        let _ = done_tx.send(());
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.context("accepting")?;
                let (shared, go) = (shared.clone(), go.clone());
                // A session ends in an error when the swarm is killed at the
                // end of a run; the swarm reports any that matter.
                tokio::spawn(async move {
                    let _ = session(stream, shared, go).await;
                });
            }
            _ = &mut done => return Ok(()),
        }
    }
}
