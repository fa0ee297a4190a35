//! Assembles Mandelbrot tiles (binary PPM, row-major task order) into one PNG.

use anyhow::{bail, Context};
use std::path::Path;

/// Parses a binary PPM: (width, height, RGB bytes).
pub fn parse_ppm(bytes: &[u8]) -> anyhow::Result<(usize, usize, &[u8])> {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if start == at {
            bail!("truncated PPM header");
        }
        fields.push(std::str::from_utf8(&bytes[start..at])?.to_string());
    }
    if fields[0] != "P6" || fields[3] != "255" {
        bail!("not an 8-bit binary PPM");
    }
    let (w, h): (usize, usize) = (fields[1].parse()?, fields[2].parse()?);
    let pixels = &bytes[at + 1..];
    if pixels.len() != w * h * 3 {
        bail!("PPM has {} pixel bytes, expected {}", pixels.len(), w * h * 3);
    }
    Ok((w, h, pixels))
}

/// Writes `tiles` (`n` x `n`, row-major) as one PNG.
pub fn assemble(tiles: &[Vec<u8>], n: usize, out: &Path) -> anyhow::Result<()> {
    if tiles.len() != n * n {
        bail!("{} tiles for a {n}x{n} grid", tiles.len());
    }
    let (tw, th, _) = parse_ppm(&tiles[0])?;
    let (w, h) = (tw * n, th * n);
    let mut rgb = vec![0u8; w * h * 3];
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = ((i % n) * tw, (i / n) * th);
        let (_, _, px) = parse_ppm(tile).with_context(|| format!("tile {i}"))?;
        for row in 0..th {
            let dst = ((y0 + row) * w + x0) * 3;
            rgb[dst..dst + tw * 3].copy_from_slice(&px[row * tw * 3..(row + 1) * tw * 3]);
        }
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&rgb)?;
    Ok(())
}
