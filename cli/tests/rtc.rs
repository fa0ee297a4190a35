//! Worker sessions over WebRTC data channels (`--rtc-listen`, `POST /rtc`):
//! a whole session with a native WebRTC peer (str0m, full ICE) on loopback,
//! and every bad offer or setting refused with a clear message while the
//! coordinator goes on. Browsers are in `tests/embed/webrtc`.

#![cfg(feature = "webrtc")]

mod common;

use idlecore_protocol::pieces::{self, Joiner};
use idlecore_protocol::{decode_coordinator, encode_worker, CoordinatorMessage, Hello, WorkerMessage, PROTOCOL_VERSION};
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

fn post_offer(c: &idlecore_e2e::Coordinator, body: Vec<u8>) -> (u16, String) {
    let reply = c.api().request("POST", "/rtc", None, body).unwrap();
    (reply.status, reply.body["raw"].as_str().map(String::from).unwrap_or_else(|| reply.body.to_string()))
}

/// A worker's side: offers a data channel, says `Hello` on it once open, and
/// returns the first message the coordinator sends back.
fn session_over_a_data_channel(c: &idlecore_e2e::Coordinator, slots: u32) -> CoordinatorMessage {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let mut rtc = Rtc::new(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut change = rtc.sdp_api();
    let channel = change.add_channel("idlecore".into());
    let (offer, pending) = change.apply().unwrap();
    let (status, answer) = post_offer(c, offer.to_sdp_string().into_bytes());
    assert_eq!(status, 200, "{answer}");
    rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

    let mut joiner = Joiner::new(1 << 20);
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no answer to Hello over the data channel");
        let wake = match rtc.poll_output().unwrap() {
            Output::Transmit(t) => {
                socket.send_to(&t.contents, t.destination).unwrap();
                continue;
            }
            Output::Event(Event::ChannelOpen(id, _)) => {
                assert_eq!(id, channel);
                let hello = WorkerMessage::Hello(Hello { version: PROTOCOL_VERSION, slots, agent: "str0m".into(), resume: None });
                for piece in pieces::split(&encode_worker(&hello)) {
                    assert!(rtc.channel(id).unwrap().write(true, &piece).unwrap());
                }
                continue;
            }
            Output::Event(Event::ChannelData(d)) => match joiner.push(&d.data).unwrap() {
                Some(frame) => return decode_coordinator(&frame).unwrap(),
                None => continue,
            },
            Output::Event(_) => continue,
            Output::Timeout(at) => at,
        };
        let wait = wake.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait.min(Duration::from_millis(100)))).unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                let packet = Receive::new(Protocol::Udp, source, local, &buf[..n]).unwrap();
                rtc.handle_input(Input::Receive(Instant::now(), packet)).unwrap();
            }
            Err(_) => rtc.handle_input(Input::Timeout(Instant::now())).unwrap(),
        }
    }
}

#[test]
fn a_worker_joins_over_a_data_channel() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--rtc-listen", "127.0.0.1:0"]);
    let CoordinatorMessage::Welcome(w) = session_over_a_data_channel(&c, 2) else { panic!("Welcome expected") };
    assert_eq!(w.blob_path, "/blobs/");
    let stats = c.api().stats().unwrap();
    assert_eq!(stats["workers"], 1, "{stats}");
    assert_eq!(stats["transports"], serde_json::json!({ "websocket": 0, "data_channel": 1 }), "{stats}");
    // This worker never speaks again: its session ends after three heartbeat periods.
    idlecore_e2e::wait_for("the silent worker to be dropped", Duration::from_secs(15), || {
        (c.api().stats().ok()?["transports"]["data_channel"] == 0).then_some(())
    })
    .unwrap();
}

#[test]
fn bad_offers_are_refused_and_the_coordinator_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start_extra(dir.path(), &["--rtc-listen", "127.0.0.1:0"]);
    let (status, why) = post_offer(&c, b"not an offer".to_vec());
    assert_eq!(status, 400);
    assert!(why.contains("not SDP"), "{why}");
    let (status, _) = post_offer(&c, vec![b'v'; idlecore_protocol::limits::MAX_SDP_BYTES + 1]);
    assert_eq!(status, 413, "an offer past the SDP limit");
    let (status, why) = post_offer(&c, vec![0xff, 0xfe]);
    assert_eq!(status, 400, "not UTF-8: {why}");
    let reply = c.api().request("POST", "/rtc?site=no%20spaces", None, b"v=0".to_vec()).unwrap();
    assert_eq!(reply.status, 400, "a bad site key");
    // Still serving: a worker joins over a data channel after all that.
    assert!(matches!(session_over_a_data_channel(&c, 1), CoordinatorMessage::Welcome(_)));
}

#[test]
fn offers_need_rtc_listen() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let (status, why) = post_offer(&c, b"v=0".to_vec());
    assert_eq!(status, 404);
    assert!(why.contains("--rtc-listen"), "{why}");
}

#[test]
fn an_unusable_rtc_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--token", common::TOKEN, "--rtc-listen", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the address browsers reach"), "{stderr}");
}

#[test]
fn offers_past_the_connecting_limits_get_503() {
    let dir = tempfile::tempdir().unwrap();
    // Clients named by the proxy on loopback: sixteen addresses in all.
    let c = common::start_extra(dir.path(), &["--rtc-listen", "127.0.0.1:0", "--trusted-proxy", "127.0.0.1"]);
    let mut rtc = Rtc::new(Instant::now());
    let mut change = rtc.sdp_api();
    change.add_channel("idlecore".into());
    let (offer, _) = change.apply().unwrap();
    let offer = offer.to_sdp_string();
    let post = |client: &str| {
        let reply = c.api().request_with("POST", "/rtc", &[("X-Forwarded-For", client)], offer.clone().into_bytes()).unwrap();
        (reply.status, reply.body.to_string())
    };
    // Nobody connects: every accepted offer stays a peer being set up (until its session gives up).
    let started = std::time::Instant::now();
    for i in 0..16 {
        assert_eq!(post("198.51.100.1").0, 200, "offer {i}");
    }
    let (status, why) = post("198.51.100.1");
    assert_eq!(status, 503, "one address holds at most 16 set-ups");
    assert!(why.contains("too many"), "{why}");
    // The other fifteen addresses at once: all 256 must be set up within the
    // 10 s a session waits for its `Hello`.
    std::thread::scope(|scope| {
        for a in 2..=16 {
            let post = &post;
            scope.spawn(move || {
                for i in 0..16 {
                    assert_eq!(post(&format!("198.51.100.{a}")).0, 200, "address {a}, offer {i}");
                }
            });
        }
    });
    // Each offer makes a DTLS certificate: on a loaded machine the first
    // set-ups may have timed out before the last were made, and freed places.
    if started.elapsed() < std::time::Duration::from_secs(9) {
        let (status, why) = post("198.51.100.99");
        assert_eq!(status, 503, "256 set-ups in all");
        assert!(why.contains("too many"), "{why}");
    }
    assert!(c.api().stats().is_ok(), "still serving");
}
