//! A reverse proxy in front of a coordinator, as an operator deploys one:
//! it may terminate TLS (a certificate from a [`TestCa`] the test makes),
//! connects upstream from a local address of its choosing, and says whom it
//! forwards for in `X-Forwarded-For` (appended to what the client sent, as
//! common proxies do). Each connection carries one request (or one upgraded
//! WebSocket): the proxy asks the coordinator to close plain HTTP connections
//! after answering, so every request passes through its header rewriting.

use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A certificate authority made for one test, and a server certificate it
/// signed for `localhost` and `127.0.0.1`.
pub struct TestCa {
    /// The CA certificate, PEM: what a client given `SSL_CERT_FILE` trusts.
    pub ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new() -> anyhow::Result<TestCa> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "idlecore test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        leaf.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = leaf.signed_by(&key, &ca)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )?;
        Ok(TestCa { ca_pem: ca.pem(), server: Arc::new(server) })
    }
}

/// How a [`FrontProxy`] behaves.
#[derive(Default)]
pub struct FrontConfig<'a> {
    /// Terminate TLS with this CA's server certificate (`https://`, `wss://`).
    pub tls: Option<&'a TestCa>,
    /// The local address its upstream connections come from (any loopback
    /// address works on Linux: `127.0.0.2` tells the proxy from clients).
    pub upstream_from: Option<IpAddr>,
    /// The client address it claims for every connection; `None` adds no header.
    pub forwarded_for: Option<IpAddr>,
}

pub struct FrontProxy {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FrontProxy {
    pub fn start(upstream: SocketAddr, cfg: FrontConfig<'_>) -> anyhow::Result<FrontProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let tls = cfg.tls.map(|ca| tokio_rustls::TlsAcceptor::from(ca.server.clone()));
        let (from, claim) = (cfg.upstream_from, cfg.forwarded_for);
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    let result = match tls {
                        Some(acceptor) => match acceptor.accept(client).await {
                            Ok(stream) => forward(stream, upstream, from, claim).await,
                            Err(e) => Err(e.into()),
                        },
                        None => forward(client, upstream, from, claim).await,
                    };
                    // A client that gives up (or a refused handshake) ends only its own connection.
                    let _ = result;
                });
            }
        });
        Ok(FrontProxy { addr, runtime: Some(runtime) })
    }
}

impl Drop for FrontProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Passes one connection on: the request head rewritten, then bytes both ways.
async fn forward<S>(mut client: S, upstream: SocketAddr, from: Option<IpAddr>, claim: Option<IpAddr>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 64 * 1024, "request head too long");
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = rewrite(&String::from_utf8_lossy(&head), claim);
    let socket = match upstream {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).context("binding the upstream side")?;
    }
    let mut server: TcpStream = socket.connect(upstream).await?;
    server.set_nodelay(true)?;
    server.write_all(head.as_bytes()).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// The request head as the coordinator gets it: the claimed client appended
/// to `X-Forwarded-For`, and plain requests asked to close the connection.
fn rewrite(head: &str, claim: Option<IpAddr>) -> String {
    let mut lines: Vec<String> = head.trim_end_matches("\r\n").split("\r\n").map(str::to_string).collect();
    let is = |line: &str, name: &str| line.split_once(':').is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name));
    let upgrade = lines.iter().any(|l| is(l, "upgrade"));
    if let Some(ip) = claim {
        match lines.iter_mut().find(|l| is(l, "x-forwarded-for")) {
            Some(line) => line.push_str(&format!(", {ip}")),
            None => lines.push(format!("X-Forwarded-For: {ip}")),
        }
    }
    if !upgrade {
        lines.retain(|l| !is(l, "connection"));
        lines.push("Connection: close".into());
    }
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn heads_get_the_claimed_client_appended() {
        let ip = Some("203.0.113.5".parse().unwrap());
        let plain = super::rewrite("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", ip);
        assert_eq!(plain, "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.5\r\nConnection: close\r\n\r\n");
        let ws = super::rewrite("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nx-forwarded-for: 1.1.1.1\r\n\r\n", ip);
        assert_eq!(ws, "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nx-forwarded-for: 1.1.1.1, 203.0.113.5\r\n\r\n");
    }
}
