//! A native worker that speaks the protocol over a real WebSocket: used to
//! test the coordinator from outside, and to send it bad input on purpose.

use anyhow::{bail, Context};
use idlecore_protocol::*;
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub struct ProtoWorker {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    /// Leases of a `Leases` batch not handed out yet.
    queued: std::collections::VecDeque<Lease>,
}

/// What the coordinator did with the connection. (A test holds one at a
/// time: the variants' sizes do not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Received {
    Msg(CoordinatorMessage),
    Closed,
}

impl ProtoWorker {
    /// Opens the socket without saying anything yet.
    pub fn connect(addr: std::net::SocketAddr) -> anyhow::Result<ProtoWorker> {
        ProtoWorker::connect_with(addr, &[])
    }

    /// Opens the socket with more request headers (a client claiming an
    /// address in `X-Forwarded-For`, say).
    pub fn connect_with(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> anyhow::Result<ProtoWorker> {
        use tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/ws").into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().append(tungstenite::http::HeaderName::from_bytes(name.as_bytes())?, value.parse()?);
        }
        let (ws, _) = tungstenite::connect(request).context("connecting to /ws")?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
        }
        Ok(ProtoWorker { ws, queued: Default::default() })
    }

    /// Connects and completes the handshake.
    pub fn join(addr: std::net::SocketAddr, slots: u32) -> anyhow::Result<(ProtoWorker, Welcome)> {
        ProtoWorker::join_with(addr, slots, &[])
    }

    /// Connects with more request headers and completes the handshake.
    pub fn join_with(addr: std::net::SocketAddr, slots: u32, headers: &[(&str, &str)]) -> anyhow::Result<(ProtoWorker, Welcome)> {
        ProtoWorker::handshake(ProtoWorker::connect_with(addr, headers)?, slots, None)
    }

    /// Connects again as the worker an earlier `Welcome` gave `resume` to.
    pub fn resume(addr: std::net::SocketAddr, slots: u32, resume: ResumeSecret) -> anyhow::Result<(ProtoWorker, Welcome)> {
        ProtoWorker::handshake(ProtoWorker::connect(addr)?, slots, Some(resume))
    }

    fn handshake(mut w: ProtoWorker, slots: u32, resume: Option<ResumeSecret>) -> anyhow::Result<(ProtoWorker, Welcome)> {
        w.send(&WorkerMessage::Hello(Hello { version: PROTOCOL_VERSION, slots, agent: "proto-worker".into(), resume }))?;
        match w.recv()? {
            Received::Msg(CoordinatorMessage::Welcome(welcome)) => Ok((w, welcome)),
            other => bail!("expected Welcome, got {other:?}"),
        }
    }

    /// How long `recv` waits before it fails (20 s from `connect`).
    pub fn set_read_timeout(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            s.set_read_timeout(Some(timeout))?;
        }
        Ok(())
    }

    /// The socket under the WebSocket, to write what no WebSocket library
    /// would (a frame begun and never finished).
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self.ws.get_mut() {
            MaybeTlsStream::Plain(s) => s,
            _ => unreachable!("ProtoWorker connects without TLS"),
        }
    }

    /// How long a `send` may block on a peer that stopped reading.
    pub fn set_write_timeout(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            s.set_write_timeout(Some(timeout))?;
        }
        Ok(())
    }

    pub fn send(&mut self, msg: &WorkerMessage) -> anyhow::Result<()> {
        self.send_raw(encode_worker(msg))
    }

    pub fn send_raw(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::Binary(frame.into()))?;
        Ok(())
    }

    pub fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into()))?;
        Ok(())
    }

    /// Next protocol message, or `Closed`. The leases of a `Leases` batch come
    /// one by one, as `Lease` messages.
    pub fn recv(&mut self) -> anyhow::Result<Received> {
        if let Some(l) = self.queued.pop_front() {
            return Ok(Received::Msg(CoordinatorMessage::Lease(l)));
        }
        match self.recv_frame()? {
            Received::Msg(CoordinatorMessage::Leases(batch)) => {
                self.queued.extend(batch);
                let first = self.queued.pop_front().context("an empty batch")?;
                Ok(Received::Msg(CoordinatorMessage::Lease(first)))
            }
            other => Ok(other),
        }
    }

    /// The next frame's message exactly as sent (batches whole).
    pub fn recv_frame(&mut self) -> anyhow::Result<Received> {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(b)) => return Ok(Received::Msg(decode_coordinator(&b).context("decoding")?)),
                Ok(Message::Close(_)) => return Ok(Received::Closed),
                Ok(_) => continue,
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake),
                ) => return Ok(Received::Closed),
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(Received::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a report and waits for the `Ack` of its lease (repeats and stale
    /// reports are acknowledged too). Returns the leases that arrived meanwhile.
    pub fn report(&mut self, msg: &WorkerMessage) -> anyhow::Result<Vec<Lease>> {
        let lease = match msg {
            WorkerMessage::Result(r) => r.lease,
            WorkerMessage::Failure(f) => f.lease,
            other => bail!("{other:?} is not a report"),
        };
        self.send(msg)?;
        self.wait_ack(lease)
    }

    /// Waits for the `Ack` of `lease`; returns the leases that arrived meanwhile.
    pub fn wait_ack(&mut self, lease: LeaseId) -> anyhow::Result<Vec<Lease>> {
        let mut leases = vec![];
        loop {
            match self.recv()? {
                Received::Msg(CoordinatorMessage::Ack(a)) if a.lease == lease => return Ok(leases),
                Received::Msg(CoordinatorMessage::Lease(l)) => leases.push(l),
                // Acks of other reports and cancels may come in any order.
                Received::Msg(CoordinatorMessage::Ack(_) | CoordinatorMessage::Cancel(_)) => continue,
                other => bail!("expected the ack of {lease}, got {other:?}"),
            }
        }
    }

    /// Waits for the next lease, skipping acks.
    pub fn next_lease(&mut self) -> anyhow::Result<Lease> {
        loop {
            match self.recv()? {
                Received::Msg(CoordinatorMessage::Lease(l)) => return Ok(l),
                Received::Msg(CoordinatorMessage::Ack(_)) => continue,
                other => bail!("expected a lease, got {other:?}"),
            }
        }
    }

    /// Expects an `Error` with `code`, then the close.
    pub fn expect_error(&mut self, code: ErrorCode) -> anyhow::Result<String> {
        let msg = match self.recv()? {
            Received::Msg(CoordinatorMessage::Error(e)) if e.code == code => e.message,
            other => bail!("expected an {code:?} error, got {other:?}"),
        };
        match self.recv()? {
            Received::Closed => Ok(msg),
            other => bail!("expected the socket to close, got {other:?}"),
        }
    }
}

/// The head of a masked binary WebSocket frame of `len` bytes (mask key 0,
/// so the payload goes as it is): what a worker sends to begin a frame it
/// may never finish (through [`ProtoWorker::tcp`]).
pub fn frame_head(len: u64) -> Vec<u8> {
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&[0; 4]);
    head
}

/// Protocol workers, one per kind, each answering every lease with
/// `answer(kind, lease)` as its stdout (exit code 0) and heartbeating while
/// idle (a banned worker is simply sent nothing more), until `until` gives a
/// value (or a minute passes). Returns it with the results each kind sent.
pub fn crowd<K: Copy + Send + 'static, T>(
    addr: std::net::SocketAddr,
    kinds: &[K],
    answer: fn(K, &Lease) -> Vec<u8>,
    until: impl FnMut() -> Option<T>,
) -> (anyhow::Result<T>, Vec<(K, u32)>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let serve = move |kind: K, done: std::sync::Arc<AtomicBool>| -> u32 {
        let (mut w, _) = ProtoWorker::join(addr, 1).expect("joins");
        w.set_read_timeout(Duration::from_millis(300)).expect("timeout");
        let mut sent = 0;
        while !done.load(Ordering::Relaxed) {
            match w.recv() {
                Ok(Received::Msg(CoordinatorMessage::Lease(l))) => {
                    let stdout = answer(kind, &l);
                    let r = TaskResult { lease: l.lease, exit_code: 0, stdout, stderr: vec![], elapsed_ms: 1, fuel_used: 0, files: vec![] };
                    w.send(&WorkerMessage::Result(r)).expect("sends");
                    sent += 1;
                }
                Ok(Received::Msg(_)) => {}
                Ok(Received::Closed) => break,
                Err(_) => w.send(&WorkerMessage::Heartbeat(Heartbeat { leases: vec![] })).expect("sends"),
            }
        }
        sent
    };
    let workers: Vec<_> = kinds
        .iter()
        .map(|&k| {
            let done = done.clone();
            std::thread::spawn(move || (k, serve(k, done)))
        })
        .collect();
    let got = crate::wait_for("the crowd's work", Duration::from_secs(120), until);
    done.store(true, Ordering::Relaxed);
    (got, workers.into_iter().map(|h| h.join().expect("worker thread")).collect())
}
