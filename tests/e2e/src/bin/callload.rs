//! An HTTP load generator for function calls, for `cargo xtask bench`: C
//! keep-alive connections on one thread, each sending `POST URL` with the
//! same body. Closed loop (each connection sends its next call when the
//! last is answered: the most a server answers) or, with `--rate R`, open
//! loop: calls are due at R per second in all, spread over the connections,
//! and each call's latency counts from when it was due, so a server that
//! falls behind is not flattered (no coordinated omission).
//!
//! usage: callload URL --connections C --seconds S [--rate R] [--body FILE] [--header NAME:VALUE]...
//! Prints one JSON object: calls, ok (2xx), statuses, seconds, rate, p50_ms, p99_ms, max_ms.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Args {
    url: hyper::Uri,
    connections: usize,
    seconds: f64,
    rate: Option<f64>,
    body: Bytes,
    headers: Vec<(String, String)>,
}

fn parse() -> anyhow::Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut a = Args { url: hyper::Uri::default(), connections: 1, seconds: 5.0, rate: None, body: Bytes::new(), headers: vec![] };
    let mut it = argv.iter();
    let mut url = None;
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--connections" => a.connections = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--rate" => a.rate = Some(value()?.parse()?),
            "--body" => a.body = Bytes::from(std::fs::read(value()?)?),
            "--header" => {
                let (k, v) = value()?.split_once(':').context("--header NAME:VALUE")?;
                a.headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            other if url.is_none() && !other.starts_with("--") => url = Some(other.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    a.url = url.context("usage: callload URL --connections C --seconds S [--rate R] [--body FILE] [--header NAME:VALUE]")?;
    Ok(a)
}

/// What one connection saw: each call's latency in microseconds and status.
type Seen = Vec<(u64, u16)>;

async fn connection(a: &Args, index: usize, start: Instant, end: Instant) -> anyhow::Result<Seen> {
    let authority = a.url.authority().context("the URL has no host")?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut seen = Seen::new();
    // Open loop: this connection's share of the rate, offset so the
    // connections' calls interleave.
    let interval = a.rate.map(|r| Duration::from_secs_f64(a.connections as f64 / r));
    let mut due = start + interval.map(|i| i.mul_f64(index as f64 / a.connections as f64)).unwrap_or_default();
    loop {
        let this = match interval {
            Some(i) => {
                tokio::time::sleep_until(due.into()).await;
                let this = due;
                due += i;
                this
            }
            None => Instant::now(),
        };
        if this >= end {
            return Ok(seen);
        }
        let mut req = Request::post(a.url.clone()).header(hyper::header::HOST, authority.as_str());
        for (k, v) in &a.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = sender.send_request(req.body(Full::new(a.body.clone()))?).await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        seen.push((this.elapsed().as_micros() as u64, status));
    }
}

fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let seen = rt.block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + Duration::from_secs_f64(a.seconds);
        let all = futures_util::future::join_all((0..a.connections).map(|i| connection(&a, i, start, end))).await;
        let mut seen = Seen::new();
        for s in all {
            seen.extend(s?);
        }
        anyhow::Ok((seen, start.elapsed()))
    })?;
    let (seen, took) = seen;
    let mut latencies: Vec<u64> = seen.iter().map(|(l, _)| *l).collect();
    latencies.sort_unstable();
    let q = |p: f64| {
        latencies.get(((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1)) - 1).map(|us| *us as f64 / 1000.0)
    };
    let mut statuses = BTreeMap::new();
    for (_, s) in &seen {
        *statuses.entry(s.to_string()).or_insert(0u64) += 1;
    }
    let ok = seen.iter().filter(|(_, s)| (200..300).contains(s)).count();
    let out = serde_json::json!({
        "calls": seen.len(),
        "ok": ok,
        "statuses": statuses,
        "seconds": took.as_secs_f64(),
        "rate": seen.len() as f64 / took.as_secs_f64(),
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "max_ms": latencies.last().map(|us| *us as f64 / 1000.0),
    });
    println!("{out}");
    Ok(())
}
