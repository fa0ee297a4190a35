//! Renders one tile of the Mandelbrot set.
//!
//! stdin: one line `TX TY` (tile column and row). Arguments (all optional):
//! `--tiles N` tiles per side (default 8), `--size PX` tile width and height in
//! pixels (default 64), `--iter N` iteration cap (default 500).
//! stdout: the tile as a binary PPM (P6), so tiles can be checked and assembled
//! without knowing the arguments.

use std::io::{Read, Write};

struct Params {
    tiles: u32,
    size: u32,
    iter: u32,
}

fn parse_args() -> Result<Params, String> {
    let mut p = Params { tiles: 8, size: 64, iter: 500 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u32 = value.parse().map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--tiles" => p.tiles = n,
            "--size" => p.size = n,
            "--iter" => p.iter = n,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if p.tiles == 0 || p.size == 0 || p.size > 4096 {
        return Err("--tiles and --size must be positive (size at most 4096)".into());
    }
    Ok(p)
}

/// Smooth colouring from the escape iteration.
fn colour(i: u32, max: u32) -> [u8; 3] {
    if i >= max {
        return [0, 0, 0];
    }
    // The square root spreads the many low escape counts over more colours.
    let t = (i as f64 / max as f64).sqrt();
    let r = 9.0 * (1.0 - t) * t * t * t * 255.0;
    let g = 15.0 * (1.0 - t) * (1.0 - t) * t * t * 255.0;
    let b = 8.5 * (1.0 - t) * (1.0 - t) * (1.0 - t) * t * 255.0;
    [r as u8, g as u8, b as u8]
}

fn render(p: &Params, tx: u32, ty: u32) -> Vec<u8> {
    // The whole picture spans [-2.5, 1] x [-1.75, 1.75].
    let full = (p.tiles * p.size) as f64;
    let scale = 3.5 / full;
    let mut out = format!("P6\n{} {}\n255\n", p.size, p.size).into_bytes();
    out.reserve((p.size * p.size * 3) as usize);
    for py in 0..p.size {
        let ci = -1.75 + (ty * p.size + py) as f64 * scale;
        for px in 0..p.size {
            let cr = -2.5 + (tx * p.size + px) as f64 * scale;
            let (mut zr, mut zi, mut i) = (0.0f64, 0.0f64, 0u32);
            while i < p.iter && zr * zr + zi * zi <= 4.0 {
                let t = zr * zr - zi * zi + cr;
                zi = 2.0 * zr * zi + ci;
                zr = t;
                i += 1;
            }
            out.extend_from_slice(&colour(i, p.iter));
        }
    }
    out
}

fn main() {
    let p = match parse_args() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mandelbrot: {e}");
            std::process::exit(2);
        }
    };
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("mandelbrot: stdin is not UTF-8");
        std::process::exit(2);
    }
    let coords: Vec<u32> = input.split_whitespace().filter_map(|s| s.parse().ok()).collect();
    let [tx, ty] = coords[..] else {
        eprintln!("mandelbrot: expected `TX TY` on stdin, got {input:?}");
        std::process::exit(2);
    };
    if tx >= p.tiles || ty >= p.tiles {
        eprintln!("mandelbrot: tile {tx} {ty} outside a {0}x{0} grid", p.tiles);
        std::process::exit(2);
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&render(&p, tx, ty)).expect("stdout");
}
