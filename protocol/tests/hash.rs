//! `Sha256Hash`: hex for people (JSON, URLs, logs), 32 raw bytes in frames.

use idlecore_protocol::{NotAHash, Sha256Hash};

#[test]
fn a_hash_is_the_digest_of_its_bytes_in_hex() {
    let h = Sha256Hash::of(b"abc");
    assert_eq!(h.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(format!("{h}"), h.to_hex());
    assert_eq!(format!("{h:?}"), h.to_hex());
    assert_eq!(h.to_hex().parse::<Sha256Hash>(), Ok(h));
    assert_eq!(h.to_hex().to_uppercase().parse::<Sha256Hash>(), Ok(h), "either case");
    for bad in ["", "ab", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65), &"é".repeat(32)] {
        assert_eq!(bad.parse::<Sha256Hash>(), Err(NotAHash), "{bad:?}");
    }
}

#[test]
fn json_writes_hex_and_frames_raw_bytes() {
    let h = Sha256Hash([0xab; 32]);
    let json = serde_json::to_string(&h).unwrap();
    assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
    assert_eq!(serde_json::from_str::<Sha256Hash>(&json).unwrap(), h);
    let err = serde_json::from_str::<Sha256Hash>("\"abc\"").unwrap_err();
    assert!(err.to_string().contains("64 hex digits"), "{err}");
    let frame = postcard::to_allocvec(&h).unwrap();
    assert_eq!(frame, [0xab; 32], "32 bytes, no length: the frame layout of a bare [u8; 32]");
    assert_eq!(postcard::from_bytes::<Sha256Hash>(&frame).unwrap(), h);
}
