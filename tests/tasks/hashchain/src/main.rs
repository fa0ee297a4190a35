//! Hashes stdin with SHA-256, then hashes the digest again `--rounds N` times
//! (default 100000), and prints the last digest in hex. Integer-bound work
//! with no floating point, for measuring the fuel meter's cost.

use sha2::{Digest, Sha256};
use std::io::Read;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut rounds: u64 = 100_000;
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--rounds", Some(n)) => rounds = n,
            _ => {
                eprintln!("usage: hashchain [--rounds N] < input");
                std::process::exit(2);
            }
        }
    }
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).expect("stdin");
    let mut digest = Sha256::digest(&input);
    for _ in 0..rounds {
        digest = Sha256::digest(digest);
    }
    println!("{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
}
