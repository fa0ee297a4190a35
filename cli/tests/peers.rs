//! Peer transfers through a real coordinator: ICE servers in `Welcome`,
//! which peers hold a blob, signaling relayed between introduced workers
//! only, egress saved counted, and bad input refused without harm.

mod common;

use idlecore_e2e::proto_worker::Received;
use idlecore_e2e::ProtoWorker;
use idlecore_protocol::*;
use std::time::Duration;

/// The next message that is not a lease, an ack or a cancel.
fn next_peer_message(w: &mut ProtoWorker) -> CoordinatorMessage {
    loop {
        match w.recv().unwrap() {
            Received::Msg(CoordinatorMessage::Lease(_) | CoordinatorMessage::Ack(_) | CoordinatorMessage::Cancel(_)) => continue,
            Received::Msg(m) => return m,
            Received::Closed => panic!("closed"),
        }
    }
}

fn signal(peer: u64, payload: SignalPayload) -> WorkerMessage {
    WorkerMessage::Signal(Signal { peer, payload })
}

fn relayed(peer: u64, payload: SignalPayload) -> CoordinatorMessage {
    CoordinatorMessage::Signal(Signal { peer, payload })
}

#[test]
fn introduced_workers_signal_each_other_through_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let ice = [
        "--ice-server",
        "stun:10.99.0.2:3478",
        "--ice-server",
        "turn:10.99.0.2:3478?transport=udp",
        "--turn-username",
        "u",
        "--turn-credential",
        "c",
    ];
    let c = common::start_extra(dir.path(), &ice);
    let api = c.api();
    let module = common::module(3);
    let hash = api.upload(&module).unwrap();
    let blob: Sha256Hash = hash.parse().unwrap();

    let (mut holder, welcome) = ProtoWorker::join(c.addr, 0).unwrap();
    assert_eq!(
        welcome.ice_servers,
        vec![
            IceServer { urls: vec!["stun:10.99.0.2:3478".into()], username: String::new(), credential: String::new() },
            IceServer { urls: vec!["turn:10.99.0.2:3478?transport=udp".into()], username: "u".into(), credential: "c".into() },
        ]
    );
    let (mut asker, _) = ProtoWorker::join(c.addr, 0).unwrap();
    let (mut stranger, _) = ProtoWorker::join(c.addr, 0).unwrap();

    asker.send(&WorkerMessage::Want(Want { blob })).unwrap();
    let CoordinatorMessage::Sources(none) = next_peer_message(&mut asker) else { panic!("Sources") };
    assert!(none.peers.is_empty(), "nobody holds it yet");
    // A worker may offer only what it was given: a stranger's claim is not listed.
    stranger.send(&WorkerMessage::Have(Have { blobs: vec![blob], from_peers: false })).unwrap();
    // The holder asks for it (so it is given it; it then fetches it from the coordinator), then has it.
    holder.send(&WorkerMessage::Want(Want { blob })).unwrap();
    assert_eq!(next_peer_message(&mut holder), CoordinatorMessage::Sources(Sources { blob, peers: vec![] }), "nobody else has it");
    holder.send(&WorkerMessage::Have(Have { blobs: vec![blob], from_peers: false })).unwrap();
    // Have has no answer: a Want from the holder itself shows it was taken in.
    holder.send(&WorkerMessage::Want(Want { blob })).unwrap();
    assert_eq!(next_peer_message(&mut holder), CoordinatorMessage::Sources(Sources { blob, peers: vec![] }), "never itself");
    asker.send(&WorkerMessage::Want(Want { blob })).unwrap();
    let CoordinatorMessage::Sources(sources) = next_peer_message(&mut asker) else { panic!("Sources") };
    let [holder_id] = sources.peers[..] else { panic!("one holder: {sources:?}") };

    asker.send(&signal(holder_id, SignalPayload::Offer("v=0 offer".into()))).unwrap();
    let CoordinatorMessage::Signal(offer) = next_peer_message(&mut holder) else { panic!("Signal") };
    assert_eq!(offer.payload, SignalPayload::Offer("v=0 offer".into()));
    let asker_id = offer.peer;
    holder.send(&signal(asker_id, SignalPayload::Answer("v=0 answer".into()))).unwrap();
    let candidate = IceCandidate { candidate: "candidate:1 1 udp 1 10.99.0.2 5000 typ host".into(), mid: "0".into(), mline: 0 };
    holder.send(&signal(asker_id, SignalPayload::Candidate(candidate.clone()))).unwrap();
    assert_eq!(next_peer_message(&mut asker), relayed(holder_id, SignalPayload::Answer("v=0 answer".into())));
    assert_eq!(next_peer_message(&mut asker), relayed(holder_id, SignalPayload::Candidate(candidate)));

    // A worker nobody introduced is told the peer is closed; the holder hears nothing of it.
    stranger.send(&signal(holder_id, SignalPayload::Offer("spam".into()))).unwrap();
    assert_eq!(next_peer_message(&mut stranger), relayed(holder_id, SignalPayload::Close));

    // The asker got the blob from its peer: the coordinator's egress saved.
    asker.send(&WorkerMessage::Have(Have { blobs: vec![blob], from_peers: true })).unwrap();
    let stats = idlecore_e2e::wait_for("peer fetch counted", Duration::from_secs(10), || {
        let s = api.stats().unwrap();
        (s["peers"]["peer_fetches"] == 1).then_some(s)
    })
    .unwrap();
    assert_eq!(stats["peers"]["peer_bytes"], module.len() as u64, "{stats}");
    assert_eq!(stats["peers"]["refused"], 1, "{stats}");
    assert_eq!(stats["peers"]["relayed"], 3, "{stats}");

    // The holder leaves: its introduced peer is told.
    drop(holder);
    assert_eq!(next_peer_message(&mut asker), relayed(holder_id, SignalPayload::Close));
    // And the stranger was never cut off for its refused signal.
    stranger.send(&WorkerMessage::Want(Want { blob })).unwrap();
    let CoordinatorMessage::Sources(s) = next_peer_message(&mut stranger) else { panic!("Sources") };
    assert_eq!(s.peers, vec![asker_id], "the asker holds it now");
}

#[test]
fn oversized_signals_end_only_their_own_session() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(dir.path());
    let (mut bad, _) = ProtoWorker::join(c.addr, 0).unwrap();
    let sdp = "v".repeat(limits::MAX_SDP_BYTES + 1);
    bad.send(&signal(1, SignalPayload::Offer(sdp))).unwrap();
    let message = bad.expect_error(ErrorCode::Malformed).unwrap();
    assert!(message.contains("sdp"), "{message}");
    let (mut good, _) = ProtoWorker::join(c.addr, 0).unwrap();
    good.send(&WorkerMessage::Want(Want { blob: Sha256Hash([1; 32]) })).unwrap();
    assert!(matches!(next_peer_message(&mut good), CoordinatorMessage::Sources(_)));
}

#[test]
fn bad_ice_servers_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in
        [(&["--ice-server", "http://10.0.0.1"][..], "not a stun:"), (&["--ice-server", "turn:10.0.0.1:3478"][..], "--turn-username")]
    {
        let out = std::process::Command::new(common::bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--token", common::TOKEN, "--data"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{args:?}: {stderr}");
    }
}
