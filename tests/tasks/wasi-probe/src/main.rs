//! Exercises the WASI host. The first argument picks what to do:
//! - `report [ARGS...]`: prints args, environment (sorted), stdin, 8 random
//!   bytes and whether the clock advances; writes `stderr-line` to stderr.
//! - `exit N`: exits with code N.
//! - `trap`: executes `unreachable`.
//! - `flood N`: writes N bytes to stdout.
//! - `spin`: loops forever.
//! - `hog N`: allocates and touches N MiB, then prints their sum.
//! - `copy`: writes `/input/in.txt` upper-cased to `/output/sub/out.txt`.
//! - `recurse`: recurses without end.
//! - `state`: prints how many times this instance has run `main` and the
//!   memory size before and after allocating 3 MiB: always 1 and the same
//!   sizes in a new instance, so also in a reused one.

use std::io::{Read, Write};

fn report(args: &[String]) {
    let mut out = String::new();
    out.push_str(&format!("args: {}\n", args.join(" ")));
    let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    out.push_str(&format!("env: {}\n", env.join(" ")));
    let mut stdin = String::new();
    std::io::stdin().read_to_string(&mut stdin).expect("stdin");
    out.push_str(&format!("stdin: {stdin}\n"));
    let mut random = [0u8; 8];
    getrandom(&mut random);
    out.push_str(&format!("random: {}\n", random.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    let t0 = std::time::Instant::now();
    let advanced = std::time::Instant::now() > t0;
    out.push_str(&format!("clock advances: {advanced}\n"));
    std::io::stdout().write_all(out.as_bytes()).expect("stdout");
    eprintln!("stderr-line");
}

/// Random bytes through the standard library's hasher seeds (wasi random_get).
fn getrandom(buf: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    for chunk in buf.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
    }
}

/// Recursion the optimizer cannot turn into a loop: each frame's buffer
/// escapes and is used again after the call.
fn recurse(n: u64, limit: u64) -> u64 {
    let mut frame = [n; 16];
    std::hint::black_box(&mut frame);
    if n >= limit {
        return frame[0];
    }
    let deeper = recurse(n + 1, limit);
    std::hint::black_box(&frame)[(n % 16) as usize] ^ deeper
}

/// Linear memory pages (0 where there is no linear memory: native builds).
fn memory_pages() -> usize {
    #[cfg(target_family = "wasm")]
    return core::arch::wasm32::memory_size(0);
    #[cfg(not(target_family = "wasm"))]
    return 0;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    match args.first().map(String::as_str) {
        Some("report") => report(&args[1..]),
        Some("exit") => std::process::exit(number(1) as i32),
        Some("trap") => std::process::abort(),
        Some("flood") => {
            let chunk = vec![b'x'; 4096];
            let mut left = number(1) as usize;
            let mut out = std::io::stdout().lock();
            while left > 0 {
                let n = left.min(chunk.len());
                out.write_all(&chunk[..n]).expect("stdout");
                left -= n;
            }
        }
        Some("spin") => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(3));
            }
        }
        Some("hog") => {
            let bytes = vec![1u8; (number(1) as usize) << 20];
            println!("{}", bytes.iter().map(|&b| b as u64).sum::<u64>());
        }
        Some("copy") => {
            let text = std::fs::read_to_string("/input/in.txt").expect("read /input/in.txt");
            std::fs::create_dir_all("/output/sub").expect("mkdir /output/sub");
            std::fs::write("/output/sub/out.txt", text.to_uppercase()).expect("write /output/sub/out.txt");
            println!("copied {} bytes", text.len());
        }
        Some("recurse") => println!("{}", recurse(0, u64::MAX)),
        Some("state") => {
            static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let runs = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let before = memory_pages();
            let bytes = std::hint::black_box(vec![7u8; 3 << 20]);
            let after = memory_pages();
            println!("runs {runs} pages {before} -> {after} sum {}", bytes.iter().map(|&b| b as u64).sum::<u64>());
        }
        _ => {
            eprintln!("usage: wasi-probe report|exit N|trap|flood N|spin|hog N|copy|recurse|state");
            std::process::exit(2);
        }
    }
}
