//! Who a request comes from: the one place for client addresses, network
//! origins and site keys.
//!
//! Behind a reverse proxy (TLS termination, a load balancer) the socket's
//! peer is the proxy; the client's address is in `Forwarded` (RFC 7239) or
//! `X-Forwarded-For`. Those headers are believed only from proxies the
//! operator named (`--trusted-proxy CIDR`): from anyone else they are a claim
//! the client makes about itself, and are ignored. The address decides a
//! worker's network origin (replicas of a task go to distinct origins), so a
//! spoofed header must never move it.

use super::Edge;
use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// A worker connecting (`/ws`, `/rtc`): the embedding site's key ("" if
/// none) and its network origin (see [`origin_of`]).
#[derive(Debug, Clone)]
pub struct Visitor {
    pub site: String,
    pub origin: Option<u64>,
    /// The client's address (through trusted proxies), if the server recorded the peer.
    pub addr: Option<IpAddr>,
}

/// `?site=KEY` on the worker endpoints: which embedding site the visitor came from.
#[derive(serde::Deserialize)]
struct SiteQuery {
    site: Option<String>,
}

/// A site key: up to 128 letters, digits, `.`, `_` or `-`.
fn valid_site(site: &str) -> bool {
    site.len() <= 128 && site.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl FromRequestParts<Arc<Edge>> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, edge: &Arc<Edge>) -> Result<Visitor, Response> {
        // Any page may connect a worker: refusals carry CORS, so its script can read why.
        let refuse = |why: String| (StatusCode::BAD_REQUEST, [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], why).into_response();
        let query = Query::<SiteQuery>::from_request_parts(parts, edge).await.map_err(|e| refuse(e.body_text()))?;
        let site = query.0.site.unwrap_or_default();
        if !valid_site(&site) {
            return Err(refuse("site key: up to 128 letters, digits, '.', '_' or '-'".into()));
        }
        // The peer address, where the server records it (a router served without it has none).
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        let addr = peer.map(|p| unmapped(client_addr(p.0.ip(), &parts.headers, &edge.config.trusted_proxies)));
        let origin = addr.and_then(origin_of);
        if addr.is_some_and(|a| !edge.upgrades.allow(a, std::time::Instant::now())) {
            let why = "too many worker connections from this address; retry in a moment";
            return Err((StatusCode::TOO_MANY_REQUESTS, [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"), (header::RETRY_AFTER, "1")], why)
                .into_response());
        }
        Ok(Visitor { site, origin, addr })
    }
}

/// The network a worker connects from, for placing a task's replicas on
/// distinct ones: its IPv4 address, or its IPv6 /64 (one household or
/// host). Loopback and unspecified addresses tell nothing (local tests and
/// a reverse proxy on the same machine), so they are `None`.
pub fn origin_of(ip: IpAddr) -> Option<u64> {
    let ip = unmapped(ip);
    if ip.is_loopback() || ip.is_unspecified() {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) => u32::from(v4) as u64,
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64 | 1 << 63,
    })
}

/// A block of addresses, `ADDR/PREFIX` (a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?}: not an IP address or ADDR/PREFIX"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmapped(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn mask(net: u128, ip: u128, prefix: u8, bits: u8) -> bool {
    let shift = bits - prefix;
    shift >= bits || net >> shift == ip >> shift
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
pub(super) fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Whether `ip` (IPv4-mapped or not) is one of the trusted proxies.
pub fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    let ip = unmapped(ip);
    trusted.iter().any(|c| c.contains(ip))
}

/// The client's address: `peer` itself, unless `peer` is a trusted proxy,
/// in which case the forwarding chain is walked from its nearest hop
/// backwards while the hops are trusted proxies too. A hop that cannot be
/// read (`unknown`, an obfuscated name, garbage) ends the walk at the last
/// address known.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let mut client = unmapped(peer);
    if !is_trusted(client, trusted) {
        return client;
    }
    for hop in forwarded_chain(headers).into_iter().rev() {
        match hop {
            Some(ip) => client = unmapped(ip),
            None => break,
        }
        if !is_trusted(client, trusted) {
            break;
        }
    }
    client
}

/// The addresses the proxies recorded, nearest last: `Forwarded: for=…`
/// when present, else `X-Forwarded-For`. `None` for a hop that is no address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim).collect::<Vec<_>>()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .map(|element| {
                let for_ =
                    element.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(k, _)| k.trim().eq_ignore_ascii_case("for"));
                for_.and_then(|(_, v)| node_addr(v.trim().trim_matches('"')))
            })
            .collect();
    }
    values("x-forwarded-for").into_iter().map(node_addr).collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:80`.
fn node_addr(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    node.rsplit_once(':')
        .and_then(|(ip, port)| port.parse::<u16>().ok().and_then(|_| ip.parse::<std::net::Ipv4Addr>().ok()))
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_addresses_and_ipv6_networks() {
        let o = |s: &str| origin_of(s.parse().unwrap());
        assert_eq!(o("127.0.0.1"), None);
        assert_eq!(o("::1"), None);
        assert_eq!(o("::ffff:127.0.0.1"), None, "mapped loopback");
        assert_eq!(o("192.0.2.1"), o("::ffff:192.0.2.1"));
        assert_ne!(o("192.0.2.1"), o("192.0.2.2"));
        assert_eq!(o("2001:db8::1"), o("2001:db8::2"), "one /64");
        assert_ne!(o("2001:db8::1"), o("2001:db8:0:1::1"));
        assert_ne!(o("0.0.0.1"), o("::1:0:0:0:0").or(Some(0)), "families never collide");
    }

    #[test]
    fn a_trusted_proxy_is_known_by_its_address_written_either_way() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted("10.1.2.3".parse().unwrap(), &trusted));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &trusted), "IPv4-mapped");
        assert!(!is_trusted("192.0.2.1".parse().unwrap(), &trusted));
    }

    #[test]
    fn site_keys_are_short_plain_names() {
        assert!(valid_site("") && valid_site("news.example-1_a"));
        assert!(!valid_site("a b") && !valid_site("a/b") && !valid_site(&"a".repeat(129)));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn blocks_parse_and_contain_their_addresses() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")) && !net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4 written as IPv6");
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(host.to_string(), "192.0.2.7/32");
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")) && !v6.contains(ip("10.0.0.1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("203.0.113.1")));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/", "10.0.0/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_count_only_from_a_trusted_proxy() {
        let trusted = cidrs(&["127.0.0.2/32", "10.0.0.0/8"]);
        let spoof = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_addr(ip("198.51.100.4"), &spoof, &trusted), ip("198.51.100.4"), "a client's own claim is ignored");
        assert_eq!(client_addr(ip("127.0.0.1"), &spoof, &trusted), ip("127.0.0.1"));
        assert_eq!(client_addr(ip("127.0.0.2"), &spoof, &trusted), ip("203.0.113.9"));
        assert_eq!(client_addr(ip("127.0.0.2"), &spoof, &[]), ip("127.0.0.2"), "no proxy trusted by default");
        assert_eq!(client_addr(ip("127.0.0.2"), &HeaderMap::new(), &trusted), ip("127.0.0.2"), "no header: the proxy itself");
    }

    #[test]
    fn the_chain_is_walked_back_through_trusted_proxies_only() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        // The client claimed 1.1.1.1; the outer proxy 10.0.0.5 recorded the client's real 203.0.113.9.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(client_addr(ip("10.0.0.6"), &h, &trusted), ip("203.0.113.9"));
        let split = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_addr(ip("10.0.0.6"), &split, &trusted), ip("203.0.113.9"), "header lines join in order");
        let unknown = headers(&[("x-forwarded-for", "203.0.113.9, unknown")]);
        assert_eq!(client_addr(ip("10.0.0.6"), &unknown, &trusted), ip("10.0.0.6"), "an unreadable hop ends the walk");
    }

    #[test]
    fn forwarded_is_read_before_x_forwarded_for() {
        let trusted = cidrs(&["127.0.0.0/8"]);
        let h = headers(&[
            ("forwarded", r#"for=192.0.2.60;proto=https;by=203.0.113.43, for="[2001:db8:cafe::17]:4711""#),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(client_addr(ip("127.0.0.1"), &h, &trusted), ip("2001:db8:cafe::17"));
        let h = headers(&[("Forwarded", "For=\"192.0.2.61:8080\"")]);
        assert_eq!(client_addr(ip("127.0.0.1"), &h, &trusted), ip("192.0.2.61"));
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(client_addr(ip("127.0.0.1"), &hidden, &trusted), ip("127.0.0.1"));
    }
}
