//! Makes a thumbnail: a PNG or JPEG image on stdin, a PNG at most `--width`
//! by `--height` pixels (default 128 by 128, the aspect ratio kept) on
//! stdout. What a site would deploy as a function (`idlecore fn deploy`).
//! Bad input exits with 1 and says why on stderr.

use image::imageops::FilterType;
use image::ImageFormat;
use std::io::{Read, Write};

fn parse_args() -> Result<(u32, u32), String> {
    let (mut width, mut height) = (128, 128);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u32 =
            value.parse().ok().filter(|n| (1..=4096).contains(n)).ok_or_else(|| format!("{flag}: not a size from 1 to 4096: {value}"))?;
        match flag.as_str() {
            "--width" => width = n,
            "--height" => height = n,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((width, height))
}

fn thumbnail() -> Result<Vec<u8>, String> {
    let (width, height) = parse_args()?;
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).map_err(|e| format!("reading stdin: {e}"))?;
    let format = image::guess_format(&input).map_err(|_| "stdin is not a PNG or JPEG image".to_string())?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(format!("stdin is {format:?}; send a PNG or JPEG image"));
    }
    let image = image::load_from_memory_with_format(&input, format).map_err(|e| format!("decoding the image: {e}"))?;
    let small = image.resize(width, height, FilterType::Triangle);
    let mut out = std::io::Cursor::new(Vec::new());
    small.write_to(&mut out, ImageFormat::Png).map_err(|e| format!("encoding the thumbnail: {e}"))?;
    Ok(out.into_inner())
}

fn main() {
    match thumbnail() {
        Ok(png) => std::io::stdout().write_all(&png).expect("stdout"),
        Err(e) => {
            eprintln!("thumbnail: {e}");
            std::process::exit(1);
        }
    }
}
