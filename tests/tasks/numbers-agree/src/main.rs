//! An idlecore comparator for outputs that are not bit-exact: two outputs
//! agree when they have the same exit code, the same files, and, in stdout
//! and every file, the same whitespace-separated words, where numbers may
//! differ by a relative 1e-6 (floating-point sums in another order, another
//! libm). stderr is not compared.
//!
//! Run as `numbers-agree A B` with A and B directories in the layout the
//! coordinator gives comparators (`exit`, `stdout`, `stderr`, `files/...`).
//! Exit code 0: agree; 1: differ; 2: an output could not be read.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::exit;

const TOLERANCE: f64 = 1e-6;

fn words_agree(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split_whitespace(), b.split_whitespace());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() && (x - y).abs() <= TOLERANCE * x.abs().max(y.abs()).max(1.0) => {}
                _ => return false,
            },
            _ => return false,
        }
    }
}

/// Every file under `dir`, by path relative to it, sorted.
fn files(dir: &Path, under: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, under, out)?;
        } else {
            out.push(path.strip_prefix(under).expect("under its root").to_path_buf());
        }
    }
    out.sort();
    Ok(())
}

fn agree(a: &Path, b: &Path) -> std::io::Result<bool> {
    let text = |dir: &Path, name: &Path| fs::read(dir.join(name)).map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    if text(a, Path::new("exit"))? != text(b, Path::new("exit"))? {
        return Ok(false);
    }
    let (mut fa, mut fb) = (vec![], vec![]);
    files(&a.join("files"), a, &mut fa)?;
    files(&b.join("files"), b, &mut fb)?;
    if fa != fb {
        return Ok(false);
    }
    for name in std::iter::once(PathBuf::from("stdout")).chain(fa) {
        if !words_agree(&text(a, &name)?, &text(b, &name)?) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b] = args.as_slice() else {
        eprintln!("usage: numbers-agree A B");
        exit(2);
    };
    match agree(Path::new(a), Path::new(b)) {
        Ok(true) => exit(0),
        Ok(false) => exit(1),
        Err(e) => {
            eprintln!("numbers-agree: {e}");
            exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::words_agree;

    #[test]
    fn numbers_agree_within_the_tolerance_and_words_exactly() {
        assert!(words_agree("sum 3.14159265358 n 7", "sum 3.14159265359  n 7\n"));
        assert!(words_agree("0 1e-12", "1e-13 0"), "near zero the tolerance is absolute");
        assert!(!words_agree("sum 3.1416", "sum 3.1417"));
        assert!(!words_agree("sum 1", "total 1"));
        assert!(!words_agree("1 2", "1"));
        assert!(!words_agree("NaN", "0") && !words_agree("inf", "1e308"));
    }
}
