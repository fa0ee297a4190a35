//! Prints one line per filesystem or clock operation, with its result or its
//! errno, so two runtimes can be compared line by line. Nothing printed
//! depends on inode numbers or timestamps.
//!
//! Usage: `wasi-conformance DIR` where DIR is a writable preopen holding
//! `hello.txt` ("hello\n") and `sub/n.txt` ("42\n").

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

fn show<T: std::fmt::Debug>(label: &str, r: std::io::Result<T>) {
    match r {
        Ok(v) => println!("{label}: ok {v:?}"),
        Err(e) => println!("{label}: err {:?} errno {:?}", e.kind(), e.raw_os_error()),
    }
}

fn listing(dir: &str) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let kind = if e.file_type()?.is_dir() { "dir" } else { "file" };
        names.push(format!("{}:{kind}", e.file_name().to_string_lossy()));
    }
    names.sort();
    Ok(names)
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/data".into());
    let p = |rel: &str| format!("{dir}/{rel}");

    show("read hello", fs::read_to_string(p("hello.txt")));
    show("read nested", fs::read_to_string(p("sub/n.txt")));
    show("list", listing(&dir));
    show("metadata size", fs::metadata(p("hello.txt")).map(|m| (m.len(), m.is_file(), m.is_dir())));
    show("metadata dir", fs::metadata(p("sub")).map(|m| m.is_dir()));
    show("read missing", fs::read(p("missing.txt")));
    show("read a directory", fs::read(p("sub")));
    show("list a file", listing(&p("hello.txt")));

    show("mkdir", fs::create_dir(p("made")));
    show("mkdir again", fs::create_dir(p("made")));
    show("write new", fs::write(p("made/a.txt"), b"abc"));
    show("append", OpenOptions::new().append(true).open(p("made/a.txt")).and_then(|mut f| f.write_all(b"def")));
    show("read back", fs::read_to_string(p("made/a.txt")));
    show("create_new existing", OpenOptions::new().write(true).create_new(true).open(p("made/a.txt")).map(|_| ()));
    show("truncate open", OpenOptions::new().write(true).truncate(true).open(p("hello.txt")).and_then(|mut f| f.write_all(b"HI")));
    show("after truncate", fs::read_to_string(p("hello.txt")));

    let seek = (|| {
        let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(p("seek.bin"))?;
        f.write_all(b"0123456789")?;
        let at = f.seek(SeekFrom::Start(3))?;
        let mut four = [0u8; 4];
        f.read_exact(&mut four)?;
        let end = f.seek(SeekFrom::End(-2))?;
        let cur = f.stream_position()?;
        f.seek(SeekFrom::Start(12))?;
        f.write_all(b"X")?;
        f.set_len(14)?;
        drop(f);
        Ok::<_, std::io::Error>((at, String::from_utf8_lossy(&four).into_owned(), end, cur, fs::read(p("seek.bin"))?))
    })();
    show("seek and read", seek);
    show("negative seek", fs::File::open(p("seek.bin")).and_then(|mut f| f.seek(SeekFrom::Current(-1))));
    show(
        "set_len shrink",
        OpenOptions::new().write(true).open(p("seek.bin")).and_then(|f| f.set_len(4)).and_then(|_| fs::read(p("seek.bin"))),
    );

    show("rename", fs::rename(p("made/a.txt"), p("made/b.txt")));
    show("rename missing", fs::rename(p("made/a.txt"), p("made/c.txt")));
    show("rename over file", fs::write(p("made/c.txt"), b"c").and_then(|_| fs::rename(p("made/c.txt"), p("made/b.txt"))));
    show("after renames", listing(&p("made")).and_then(|l| Ok((l, fs::read_to_string(p("made/b.txt"))?))));
    show("rename dir into itself", fs::rename(p("made"), p("made/inner")));
    show("remove non-empty dir", fs::remove_dir(p("made")));
    show("remove dir as file", fs::remove_file(p("made")));
    show("remove file as dir", fs::remove_dir(p("made/b.txt")));
    show("remove file", fs::remove_file(p("made/b.txt")));
    show("remove missing", fs::remove_file(p("made/b.txt")));
    show("remove empty dir", fs::remove_dir(p("made")));
    show("nested mkdir", fs::create_dir_all(p("x/y/z")).and_then(|_| fs::write(p("x/y/z/deep.txt"), b"deep")));
    show("dotdot inside", fs::read_to_string(p("x/y/../y/z/deep.txt")));
    show("list after", listing(&dir));
    show("open in missing dir", fs::write(p("nope/file.txt"), b"x"));
    show("file as dir", fs::write(p("hello.txt/x"), b"x"));

    show("escape with dotdot", fs::read(p("../outside.txt")));
    show("escape deeper", fs::read(p("sub/../../outside.txt")));
    show("absolute elsewhere", fs::read("/etc/passwd"));
    show("metadata of dir itself", fs::metadata(&dir).map(|m| m.is_dir()));
    let many = (|| {
        fs::create_dir(p("many"))?;
        for i in 0..60 {
            fs::write(p(&format!("many/file-with-a-longish-name-{i:03}.txt")), [i as u8])?;
        }
        let names = listing(&p("many"))?;
        for i in 0..60 {
            fs::remove_file(p(&format!("many/file-with-a-longish-name-{i:03}.txt")))?;
        }
        fs::remove_dir(p("many"))?;
        Ok::<_, std::io::Error>((names.len(), names.first().cloned(), names.last().cloned()))
    })();
    show("sixty entries", many);
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    println!("sleep waited: {}", t0.elapsed() >= std::time::Duration::from_millis(20));
    println!("done");
}
