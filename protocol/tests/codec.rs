use idlecore_protocol::limits::{MAX_ARGS, MAX_SLOTS};
use idlecore_protocol::*;

fn lease() -> Lease {
    Lease {
        lease: 7,
        job: 1,
        task: 2,
        module: Sha256Hash([0xab; 32]),
        stdin: b"0 0".to_vec(),
        args: vec!["--size".into(), "64".into()],
        env: vec![("K".into(), "V".into())],
        limits: TaskLimits { timeout_ms: 1000, max_output_bytes: 4096, max_memory_pages: 16, fuel: 1 << 40 },
        seed: 99,
        deterministic: true,
        dirs: vec![TaskDir { guest: "/input".into(), writable: false, files: vec![TaskFile { path: "a/b.txt".into(), data: vec![1, 2] }] }],
        blobs: vec![InputBlob { hash: Sha256Hash([0xcd; 32]), size: 1 << 20, target: BlobTarget::File { dir: 0, path: "big.bin".into() } }],
    }
}

#[test]
fn every_message_round_trips() {
    let worker = [
        WorkerMessage::Hello(Hello { version: PROTOCOL_VERSION, slots: 3, agent: "x".into(), resume: Some([7; 24]) }),
        WorkerMessage::Result(TaskResult {
            lease: 1,
            exit_code: -1,
            stdout: vec![0, 255, 7],
            stderr: vec![],
            elapsed_ms: 12,
            fuel_used: 1234567,
            files: vec![TaskFile { path: "/output/x".into(), data: b"out".to_vec() }],
        }),
        WorkerMessage::Failure(TaskFailure { lease: 2, kind: FailureKind::Timeout, message: "slow".into() }),
        WorkerMessage::Failure(TaskFailure { lease: 3, kind: FailureKind::FuelExhausted, message: String::new() }),
        WorkerMessage::Heartbeat(Heartbeat { leases: vec![1, 2, u128::MAX] }),
        WorkerMessage::Capacity(Capacity { slots: 0 }),
        WorkerMessage::Signal(Signal { peer: 9, payload: SignalPayload::Offer("v=0".into()) }),
        WorkerMessage::Signal(Signal {
            peer: 9,
            payload: SignalPayload::Candidate(IceCandidate {
                candidate: "candidate:1 1 udp 1 10.0.0.1 5000 typ host".into(),
                mid: "0".into(),
                mline: 0,
            }),
        }),
        WorkerMessage::Signal(Signal { peer: 9, payload: SignalPayload::Close }),
        WorkerMessage::Have(Have { blobs: vec![Sha256Hash([1; 32]), Sha256Hash([2; 32])], from_peers: true }),
        WorkerMessage::Want(Want { blob: Sha256Hash([3; 32]) }),
    ];
    for m in worker {
        assert_eq!(decode_worker(&encode_worker(&m)).unwrap(), m);
    }
    let coordinator = [
        CoordinatorMessage::Welcome(Welcome {
            version: 1,
            session: 5,
            heartbeat_ms: 5000,
            blob_path: "/blobs/".into(),
            max_frame: MAX_FRAME_BYTES as u32,
            ice_servers: vec![IceServer { urls: vec!["turn:10.0.0.1:3478".into()], username: "u".into(), credential: "c".into() }],
            resume: [9; 24],
        }),
        CoordinatorMessage::Lease(lease()),
        CoordinatorMessage::Cancel(Cancel { leases: vec![3, u128::MAX] }),
        CoordinatorMessage::Ack(Ack { lease: 4 }),
        CoordinatorMessage::Error(ProtocolError { code: ErrorCode::Malformed, message: "bad".into() }),
        CoordinatorMessage::Leases(vec![lease(), Lease { lease: 99, ..lease() }]),
        CoordinatorMessage::Signal(Signal { peer: 4, payload: SignalPayload::Answer("v=0".into()) }),
        CoordinatorMessage::Sources(Sources { blob: Sha256Hash([3; 32]), peers: vec![4, 5] }),
    ];
    for m in coordinator {
        assert_eq!(decode_coordinator(&encode_coordinator(&m)).unwrap(), m);
    }
}

/// The byte layout documented in docs/protocol.md.
#[test]
fn hello_bytes_match_the_specification() {
    let m = WorkerMessage::Hello(Hello { version: 2, slots: 300, agent: "ab".into(), resume: None });
    // slots would fail the limit; encode only, to pin the varint layout.
    assert_eq!(encode_worker(&m), [0x00, 0x02, 0xac, 0x02, 0x02, b'a', b'b', 0x00]);
    let ack = CoordinatorMessage::Ack(Ack { lease: 128 });
    assert_eq!(encode_coordinator(&ack), [0x03, 0x80, 0x01]);
    let close = WorkerMessage::Signal(Signal { peer: 5, payload: SignalPayload::Close });
    assert_eq!(encode_worker(&close), [0x05, 0x05, 0x03]);
}

#[test]
fn lease_batches_are_checked_like_single_leases() {
    assert!(decode_coordinator(&encode_coordinator(&CoordinatorMessage::Leases(vec![]))).is_err(), "an empty batch");
    let too_many = CoordinatorMessage::Leases(vec![lease(); MAX_SLOTS as usize + 1]);
    assert!(decode_coordinator(&encode_coordinator(&too_many)).is_err(), "more than any capacity");
    let mut bad = lease();
    bad.args = vec!["x".into(); MAX_ARGS + 1];
    let batch = CoordinatorMessage::Leases(vec![lease(), bad]);
    assert!(decode_coordinator(&encode_coordinator(&batch)).is_err(), "one bad lease spoils the batch");
}

#[test]
fn garbage_is_refused_with_a_reason() {
    assert_eq!(decode_worker(&[]), Err(DecodeError::Empty));
    assert_eq!(decode_worker(&[9, 1, 2]), Err(DecodeError::UnknownType(9)));
    assert_eq!(decode_coordinator(&[0xff]), Err(DecodeError::UnknownType(0xff)));
    // Truncated Hello: version present, slots missing.
    assert!(matches!(decode_worker(&[0, 1]), Err(DecodeError::Malformed(_))));
    // A byte string claiming more bytes than the frame has.
    let mut r = encode_worker(&WorkerMessage::Result(TaskResult {
        lease: 1,
        exit_code: 0,
        stdout: vec![1; 10],
        stderr: vec![],
        elapsed_ms: 0,
        fuel_used: 0,
        files: vec![],
    }));
    r.truncate(r.len() - 5);
    assert!(matches!(decode_worker(&r), Err(DecodeError::Malformed(_))));
    let mut ok = encode_coordinator(&CoordinatorMessage::Ack(Ack { lease: 1 }));
    ok.push(0);
    assert_eq!(decode_coordinator(&ok), Err(DecodeError::Trailing(1)));
}

#[test]
fn limits_are_enforced_on_decode() {
    let big = vec![0u8; MAX_FRAME_BYTES + 1];
    assert_eq!(decode_worker(&big), Err(DecodeError::TooLarge(MAX_FRAME_BYTES + 1)));
    let many_slots = encode_worker(&WorkerMessage::Hello(Hello { version: 1, slots: 257, agent: String::new(), resume: None }));
    assert!(matches!(decode_worker(&many_slots), Err(DecodeError::Limit { field: "slots", .. })));
    // 0 slots: a worker joining paused (to deliver reports, say).
    let paused = encode_worker(&WorkerMessage::Hello(Hello { version: 1, slots: 0, agent: String::new(), resume: None }));
    assert!(decode_worker(&paused).is_ok());
    let long_agent =
        encode_worker(&WorkerMessage::Hello(Hello { version: 1, slots: 1, agent: "a".repeat(limits::MAX_TEXT_BYTES + 1), resume: None }));
    assert!(matches!(decode_worker(&long_agent), Err(DecodeError::Limit { field: "agent", .. })));
    let mut l = lease();
    l.args = vec![String::new(); limits::MAX_ARGS + 1];
    let many_args = encode_coordinator(&CoordinatorMessage::Lease(l));
    assert!(matches!(decode_coordinator(&many_args), Err(DecodeError::Limit { field: "args", .. })));
}

#[test]
fn input_blobs_are_held_to_their_limits() {
    let refused = |l: Lease| match decode_coordinator(&encode_coordinator(&CoordinatorMessage::Lease(l))) {
        Err(DecodeError::Limit { field, .. }) => field,
        other => panic!("expected a limit error, got {other:?}"),
    };
    let blob = |size, target| InputBlob { hash: Sha256Hash([1; 32]), size, target };
    let file = |dir| BlobTarget::File { dir, path: "x".into() };
    // Stdin from a blob: the lease's own stdin must be empty.
    let stdin_blob = Lease { stdin: vec![], blobs: vec![blob(5, BlobTarget::Stdin)], ..lease() };
    assert!(decode_coordinator(&encode_coordinator(&CoordinatorMessage::Lease(stdin_blob))).is_ok());
    assert_eq!(refused(Lease { blobs: vec![blob(5, BlobTarget::Stdin)], ..lease() }), "blobs.stdin");
    assert_eq!(refused(Lease { stdin: vec![], blobs: vec![blob(5, BlobTarget::Stdin); 2], ..lease() }), "blobs.stdin");
    assert_eq!(refused(Lease { blobs: vec![blob(5, file(1))], ..lease() }), "blobs.dir");
    let long_path = BlobTarget::File { dir: 0, path: "p".repeat(limits::MAX_PATH_BYTES + 1) };
    assert_eq!(refused(Lease { blobs: vec![blob(5, long_path)], ..lease() }), "blobs.path");
    assert_eq!(refused(Lease { blobs: vec![blob(1, file(0)); limits::MAX_LEASE_BLOBS + 1], ..lease() }), "blobs");
    let half = limits::MAX_LEASE_BLOB_BYTES / 2 + 1;
    assert_eq!(refused(Lease { blobs: vec![blob(half, file(0)); 2], ..lease() }), "blobs.size");
    // Sizes that overflow when added are refused, not wrapped.
    assert_eq!(refused(Lease { blobs: vec![blob(u64::MAX, file(0)), blob(2, file(0))], ..lease() }), "blobs.size");
}

#[test]
fn invalid_utf8_is_malformed() {
    // Failure { lease 1, kind 0, message: [0xff] }
    let frame = [2, 1, 0, 1, 0xff];
    assert!(matches!(decode_worker(&frame), Err(DecodeError::Malformed(_))));
}

#[test]
fn peer_messages_are_held_to_their_limits() {
    use idlecore_protocol::limits::{MAX_ICE_BYTES, MAX_ICE_SERVERS, MAX_SDP_BYTES, MAX_SOURCES};
    let offer = |n| encode_worker(&WorkerMessage::Signal(Signal { peer: 1, payload: SignalPayload::Offer("v".repeat(n)) }));
    assert!(decode_worker(&offer(MAX_SDP_BYTES)).is_ok());
    assert!(matches!(decode_worker(&offer(MAX_SDP_BYTES + 1)), Err(DecodeError::Limit { field: "sdp", .. })));
    let candidate = IceCandidate { candidate: "c".repeat(MAX_ICE_BYTES + 1), mid: "0".into(), mline: 0 };
    let long = encode_coordinator(&CoordinatorMessage::Signal(Signal { peer: 1, payload: SignalPayload::Candidate(candidate) }));
    assert!(matches!(decode_coordinator(&long), Err(DecodeError::Limit { field: "candidate", .. })));
    let sources = encode_coordinator(&CoordinatorMessage::Sources(Sources { blob: Sha256Hash([0; 32]), peers: vec![1; MAX_SOURCES + 1] }));
    assert!(matches!(decode_coordinator(&sources), Err(DecodeError::Limit { field: "peers", .. })));
    let server = IceServer { urls: vec!["stun:10.0.0.1".into()], username: String::new(), credential: String::new() };
    let welcome = |servers: Vec<IceServer>| {
        encode_coordinator(&CoordinatorMessage::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            session: 1,
            heartbeat_ms: 1000,
            blob_path: "/blobs/".into(),
            max_frame: 1,
            ice_servers: servers,
            resume: [9; 24],
        }))
    };
    assert!(decode_coordinator(&welcome(vec![server.clone(); MAX_ICE_SERVERS])).is_ok());
    assert!(matches!(
        decode_coordinator(&welcome(vec![server.clone(); MAX_ICE_SERVERS + 1])),
        Err(DecodeError::Limit { field: "ice_servers", .. })
    ));
    let secret = IceServer { credential: "x".repeat(MAX_ICE_BYTES + 1), ..server };
    assert!(matches!(decode_coordinator(&welcome(vec![secret])), Err(DecodeError::Limit { field: "ice_servers entry", .. })));
}
