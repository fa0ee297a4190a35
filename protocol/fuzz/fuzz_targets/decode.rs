//! Any bytes at all, decoded as a frame from either side: the decoder never
//! panics, and whatever it accepts encodes back to a frame that decodes to
//! the same message.

#![no_main]

use idlecore_protocol::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_worker(data) {
        assert_eq!(decode_worker(&encode_worker(&m)).expect("re-encoded worker frame decodes"), m);
    }
    if let Ok(m) = decode_coordinator(data) {
        assert_eq!(decode_coordinator(&encode_coordinator(&m)).expect("re-encoded coordinator frame decodes"), m);
    }
});
