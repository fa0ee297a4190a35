//! A guest as hostile as it gets: any sequence of preview1 calls with any
//! arguments, against a guest memory whose bytes the fuzzer also chooses.
//! The host never panics, never reads or writes outside the memory (it is a
//! plain `Vec`), and the output it holds never passes the task's limit.

#![no_main]

use idlecore_wasi_host::{GuestMemory, VecMemory, WasiCtx};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

const MAX_OUTPUT: u32 = 4096;

#[derive(Arbitrary, Debug)]
enum Call {
    ArgsSizes(u32, u32),
    Args(u32, u32),
    EnvironSizes(u32, u32),
    Environ(u32, u32),
    ClockRes(u32, u32),
    ClockTime(u32, u32),
    Random(u32, u32),
    Write(u32, u32, u32, u32),
    Pwrite(u32, u32, u32, u64, u32),
    Read(u32, u32, u32, u32),
    Pread(u32, u32, u32, u64, u32),
    Seek(u32, i64, u32, u32),
    Tell(u32, u32),
    Close(u32),
    Renumber(u32, u32),
    PrestatGet(u32, u32),
    PrestatDirName(u32, u32, u32),
    FdstatGet(u32, u32),
    FdstatSetFlags(u32, u32),
    FilestatGet(u32, u32),
    FilestatSetSize(u32, u64),
    Readdir(u32, u32, u32, u64, u32),
    PathFilestatGet(u32, u32, u32, u32),
    PathOpen(u32, u32, u32, u32, u64, u32, u32),
    CreateDirectory(u32, u32, u32),
    RemoveDirectory(u32, u32, u32),
    Unlink(u32, u32, u32),
    Rename(u32, u32, u32, u32, u32, u32),
    Readlink(u32, u32, u32),
    PollOneoff(u32, u32, u32, u32),
    Sock(u32),
    /// Puts bytes into the guest memory (paths, iovecs) between calls.
    Poke(u16, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Script {
    memory_pages: u8,
    args: Vec<String>,
    stdin: Vec<u8>,
    files: Vec<(String, Vec<u8>)>,
    calls: Vec<Call>,
}

/// A call that cannot end the run: its errno is all it returns.
fn goes_on<T>(_errno: T) -> bool {
    false
}

fuzz_target!(|s: Script| {
    let size = (s.memory_pages as usize % 4 + 1) * 16 * 1024;
    let mem = VecMemory::new(size);
    let Ok(ctx) = WasiCtx::new("fuzz", &s.args, &[("K".into(), "V".into())], s.stdin, 7, MAX_OUTPUT).with_preopen("/in", false, s.files)
    else {
        return;
    };
    let Ok(mut c) = ctx.with_preopen("/out", true, vec![]) else { return };
    for call in s.calls.into_iter().take(256) {
        let stop = match call {
            Call::ArgsSizes(a, b) => goes_on(c.args_sizes_get(&mem, a, b)),
            Call::Args(a, b) => goes_on(c.args_get(&mem, a, b)),
            Call::EnvironSizes(a, b) => goes_on(c.environ_sizes_get(&mem, a, b)),
            Call::Environ(a, b) => goes_on(c.environ_get(&mem, a, b)),
            Call::ClockRes(a, b) => goes_on(c.clock_res_get(&mem, a, b)),
            Call::ClockTime(a, b) => goes_on(c.clock_time_get(&mem, a, b)),
            Call::Random(a, b) => goes_on(c.random_get(&mem, a, b % (1 << 20))),
            Call::Write(fd, iovs, n, out) => c.fd_write(&mem, fd, iovs, n % 64, out).is_err(),
            Call::Pwrite(fd, iovs, n, off, out) => c.fd_pwrite(&mem, fd, iovs, n % 64, off, out).is_err(),
            Call::Read(fd, iovs, n, out) => goes_on(c.fd_read(&mem, fd, iovs, n % 64, out)),
            Call::Pread(fd, iovs, n, off, out) => goes_on(c.fd_pread(&mem, fd, iovs, n % 64, off, out)),
            Call::Seek(fd, off, whence, out) => goes_on(c.fd_seek(&mem, fd, off, whence, out)),
            Call::Tell(fd, out) => goes_on(c.fd_tell(&mem, fd, out)),
            Call::Close(fd) => goes_on(c.fd_close(fd)),
            Call::Renumber(a, b) => goes_on(c.fd_renumber(a, b)),
            Call::PrestatGet(fd, out) => goes_on(c.fd_prestat_get(&mem, fd, out)),
            Call::PrestatDirName(fd, p, l) => goes_on(c.fd_prestat_dir_name(&mem, fd, p, l)),
            Call::FdstatGet(fd, out) => goes_on(c.fd_fdstat_get(&mem, fd, out)),
            Call::FdstatSetFlags(fd, f) => goes_on(c.fd_fdstat_set_flags(fd, f)),
            Call::FilestatGet(fd, out) => goes_on(c.fd_filestat_get(&mem, fd, out)),
            Call::FilestatSetSize(fd, size) => c.fd_filestat_set_size(fd, size).is_err(),
            Call::Readdir(fd, buf, len, cookie, out) => goes_on(c.fd_readdir(&mem, fd, buf, len % (1 << 16), cookie, out)),
            Call::PathFilestatGet(fd, p, l, out) => goes_on(c.path_filestat_get(&mem, fd, p, l, out)),
            Call::PathOpen(fd, p, l, oflags, rights, fdflags, out) => c.path_open(&mem, fd, p, l, oflags, rights, fdflags, out).is_err(),
            Call::CreateDirectory(fd, p, l) => goes_on(c.path_create_directory(&mem, fd, p, l)),
            Call::RemoveDirectory(fd, p, l) => goes_on(c.path_remove_directory(&mem, fd, p, l)),
            Call::Unlink(fd, p, l) => goes_on(c.path_unlink_file(&mem, fd, p, l)),
            Call::Rename(fd, p, l, nfd, np, nl) => goes_on(c.path_rename(&mem, fd, p, l, nfd, np, nl)),
            Call::Readlink(fd, p, l) => goes_on(c.path_readlink(&mem, fd, p, l)),
            Call::PollOneoff(subs, events, n, out) => goes_on(c.poll_oneoff(&mem, subs, events, n % 64, out)),
            Call::Sock(fd) => goes_on(c.sock_call(fd)),
            Call::Poke(at, bytes) => {
                let _ = mem.write(at as u32, &bytes[..bytes.len().min(256)]);
                false
            }
        };
        let held = c.stdout.len() + c.stderr.len() + c.output_files().iter().map(|(_, _, d)| d.len()).sum::<usize>();
        assert!(held <= MAX_OUTPUT as usize, "output {held} past the limit {MAX_OUTPUT}");
        if stop {
            break;
        }
    }
});
