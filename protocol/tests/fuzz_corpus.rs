//! Replays the fuzzer's corpus (`fuzz/corpus/decode`, found by
//! `cargo +nightly fuzz run decode`) on every `cargo test`, with the fuzz
//! target's checks: decoding never panics, and an accepted frame re-encodes
//! to one that decodes to the same message.

use idlecore_protocol::*;
use std::path::Path;

#[test]
fn the_fuzz_corpus_decodes_without_panics_and_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut files = 0;
    let mut accepted = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus is committed") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        if let Ok(m) = decode_worker(&data) {
            accepted += 1;
            assert_eq!(decode_worker(&encode_worker(&m)).unwrap(), m);
        }
        if let Ok(m) = decode_coordinator(&data) {
            accepted += 1;
            assert_eq!(decode_coordinator(&encode_coordinator(&m)).unwrap(), m);
        }
    }
    assert!(files >= 100, "only {files} corpus files in {}", dir.display());
    assert!(accepted >= 10, "the corpus reaches past the decoder's first checks ({accepted} frames accepted)");
}
