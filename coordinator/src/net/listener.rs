//! Accepting connections, with the limits an open port on the internet
//! needs: at most so many connections in all and from one address, and a
//! deadline for a request's headers. Every connection a client opens holds a
//! file (the open-files limit is finite), so a few clients that open many, or
//! that send half a request and wait, would otherwise lock every worker out.
//!
//! Addresses are the sockets' peers: behind a reverse proxy that is the
//! proxy, so trusted proxies (`--trusted-proxy`) are not held to the
//! per-address cap (the proxy should apply its own).

use super::client::Cidr;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// What the listener allows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one address (a site behind one NAT
    /// shares one address: raise it for such a site).
    pub max_per_address: usize,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Peers not held to `max_per_address`.
    pub trusted_proxies: Vec<Cidr>,
}

/// Connections open, in all and by address.
#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Counts one connection as open until dropped. Each request carries it
/// (an `Arc<Slot>` extension): a connection upgraded to a worker session is
/// counted until the session ends, not only while it speaks HTTP.
pub struct Slot {
    open: Arc<Mutex<Open>>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(ip) = self.ip {
            if let Some(n) = open.by_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.by_address.remove(&ip);
                }
            }
        }
    }
}

/// Why a connection was not taken.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    Full,
    Address,
}

fn take_slot(open: &Arc<Mutex<Open>>, limits: &Limits, peer: IpAddr) -> Result<Arc<Slot>, Refused> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    if o.total >= limits.max_connections {
        return Err(Refused::Full);
    }
    let counted = !super::client::is_trusted(peer, &limits.trusted_proxies);
    if counted {
        let n = o.by_address.entry(peer).or_insert(0);
        if *n >= limits.max_per_address {
            return Err(Refused::Address);
        }
        *n += 1;
    }
    o.total += 1;
    Ok(Arc::new(Slot { open: open.clone(), ip: counted.then_some(peer) }))
}

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting and gives open HTTP connections `grace` to finish.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl std::future::Future<Output = ()>, grace: Duration) {
    let open = Arc::new(Mutex::new(Open::default()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    let mut refused_logged = tokio::time::Instant::now();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of files, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match take_slot(&open, &limits, super::client::unmapped(peer.ip())) {
            Ok(slot) => slot,
            Err(why) => {
                if refused_logged.elapsed() > Duration::from_secs(1) {
                    refused_logged = tokio::time::Instant::now();
                    tracing::warn!(%peer, ?why, "connection refused: too many open");
                }
                continue;
            }
        };
        // Without TCP_NODELAY a lease written right after an `Ack` waits for
        // the worker's delayed ACK (~40 ms): small frames must go at once.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        let held = slot.clone();
        let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(held.clone());
            let mut app = app.clone();
            async move { tower::Service::call(&mut app, req).await }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            // Errors here are the client's (a reset, a header timeout).
            let _ = conn.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::info!("HTTP connections still open after the grace period; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per: usize, trusted: &[&str]) -> Limits {
        Limits {
            max_connections: total,
            max_per_address: per,
            header_timeout: Duration::from_secs(1),
            trusted_proxies: trusted.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn connections_are_capped_in_all_and_per_address_and_freed_on_drop() {
        let open = Arc::new(Mutex::new(Open::default()));
        let l = limits(3, 2, &["10.0.0.1"]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let a1 = take_slot(&open, &l, a).unwrap();
        let _a2 = take_slot(&open, &l, a).unwrap();
        assert_eq!(take_slot(&open, &l, a).err(), Some(Refused::Address));
        let _b1 = take_slot(&open, &l, b).unwrap();
        assert_eq!(take_slot(&open, &l, b).err(), Some(Refused::Full), "3 in all");
        drop(a1);
        let p1 = take_slot(&open, &l, proxy).unwrap();
        drop(p1);
        let _p1 = take_slot(&open, &l, proxy).unwrap();
        assert_eq!(open.lock().unwrap().by_address.get(&proxy), None, "a trusted proxy is not counted by address");
        assert_eq!(open.lock().unwrap().total, 3);
    }
}
