//! What decoding a hostile frame allocates, counted by this test binary's
//! allocator (one test per binary, so nothing else allocates meanwhile).

use idlecore_protocol::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counts are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A 16 MB `Result` of 8 million empty files is refused while decoding, not
/// after it has become a list of 8 million `TaskFile`s (384 MB).
#[test]
fn a_frame_of_millions_of_empty_files_is_refused_before_it_grows() {
    let count: u32 = 8_000_000;
    // Result { lease 1, exit 0, stdout [], stderr [], elapsed 0, fuel 0, files: count × { "", [] } }
    let mut frame = vec![1, 1, 0, 0, 0, 0, 0];
    let mut n = count;
    while n >= 0x80 {
        frame.push((n as u8) | 0x80);
        n >>= 7;
    }
    frame.push(n as u8);
    frame.resize(frame.len() + 2 * count as usize, 0);
    assert!(frame.len() <= MAX_FRAME_BYTES);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let decoded = decode_worker(&frame);
    assert!(matches!(decoded, Err(DecodeError::Malformed(_))), "{decoded:?}");
    let grown = PEAK.load(Ordering::Relaxed) - before;
    assert!(grown < 1 << 20, "decoding held {grown} bytes at its peak");
}
