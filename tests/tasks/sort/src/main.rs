//! Sorts `--n N` pseudo-random 32-bit integers (default 1,000,000; xorshift
//! seeded by stdin's bytes) and prints a checksum of the sorted order, its
//! smallest and its largest value. Memory-bound work: loads, stores and
//! branches over a buffer of 4N bytes, unlike the Mandelbrot tile and the
//! hash chain.

use std::io::Read;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut n: usize = 1_000_000;
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--n", Some(v)) => n = v,
            _ => {
                eprintln!("usage: sort [--n N] < seed");
                std::process::exit(2);
            }
        }
    }
    let mut seed = Vec::new();
    std::io::stdin().read_to_end(&mut seed).expect("stdin");
    // FNV-1a of the seed text; xorshift needs a non-zero state.
    let mut state = seed.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)) | 1;
    let mut values: Vec<u32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u32
        })
        .collect();
    values.sort_unstable();
    let checksum = values.iter().enumerate().fold(0u64, |h, (i, v)| h.wrapping_mul(31).wrapping_add(*v as u64 ^ i as u64));
    println!("{checksum:016x} {} {}", values.first().copied().unwrap_or(0), values.last().copied().unwrap_or(0));
}
