//! Hashes stdin with SHA-256, then hashes the digest again `--rounds N` times
//! (default 100000), and prints the last digest in hex. Integer-bound work
//! with no floating point, for measuring the fuel meter's cost.
//!
//! `--bulk-mib M` hashes M MiB first instead (stdin, then bytes generated from
//! it, 64 KiB at a time): SHA-256 over a large buffer streaming through
//! memory, without shipping it as input.

use sha2::{Digest, Sha256};
use std::io::Read;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut rounds, mut bulk_mib): (u64, u64) = (100_000, 0);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--rounds", Some(n)) => rounds = n,
            ("--bulk-mib", Some(m)) => bulk_mib = m,
            _ => {
                eprintln!("usage: hashchain [--rounds N] [--bulk-mib M] < input");
                std::process::exit(2);
            }
        }
    }
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).expect("stdin");
    let mut digest = if bulk_mib == 0 { Sha256::digest(&input) } else { bulk(&input, bulk_mib) };
    for _ in 0..rounds {
        digest = Sha256::digest(digest);
    }
    println!("{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
}

/// SHA-256 of `mib` MiB: `seed` repeated, each 64 KiB chunk changed by its index.
fn bulk(seed: &[u8], mib: u64) -> sha2::digest::Output<Sha256> {
    let mut chunk = vec![0u8; 64 * 1024];
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = seed.get(i % seed.len().max(1)).copied().unwrap_or(0) ^ (i as u8);
    }
    let mut hasher = Sha256::new();
    for n in 0..mib * 16 {
        chunk[..8].copy_from_slice(&n.to_le_bytes());
        hasher.update(&chunk);
    }
    hasher.finalize()
}
