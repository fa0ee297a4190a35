//! idlecore's WASI preview1 host: what a task module sees, the same in every
//! engine that runs one (the browser executor, the coordinator's comparator
//! host, the native worker), so that honest runs agree byte for byte and
//! browsers and native workers can vote in one quorum.
//!
//! Plain Rust over a [`GuestMemory`]: an engine binds each preview1 import to
//! the [`WasiCtx`] method of the same name and hands over the guest memory
//! for the call. Tasks see stdin, stdout, stderr, args, environment, clocks,
//! random numbers and preopened directories over an in-memory filesystem
//! (`fs`, `fds`). Clocks and random numbers are traits ([`Clocks`],
//! [`Random`]): by default both come from the task's seed, so two honest runs
//! of one task produce the same bytes. Calls for which this host has no
//! resource (links) return the preview1 errno that says so, and socket calls
//! the one wasmtime gives; none panics. [`task`] builds a run's context from
//! a protocol lease and its result files.

mod clocks;
mod fds;
pub mod fs;
mod memory;
mod paths;
mod poll;
pub mod task;

pub use clocks::{Clocks, Random, SeededClocks, SeededRandom, CLOCK_STEP_NS};
pub use fds::{Fd, Preopen};
pub use memory::{in_bounds, GuestMemory, SliceMemory, VecMemory};

/// The module every preview1 import comes from.
pub const WASI: &str = "wasi_snapshot_preview1";

/// Every preview1 function. An engine binds each to the method of the same
/// name (a few map to shared helpers, such as `fd_check` and `sock_call`).
pub const PREVIEW1: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// preview1 errno values used by this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Errno {
    Success = 0,
    Badf = 8,
    Busy = 10,
    Exist = 20,
    Fault = 21,
    Fbig = 22,
    Ilseq = 25,
    Inval = 28,
    Isdir = 31,
    Mfile = 33,
    Nametoolong = 37,
    Noent = 44,
    Nosys = 52,
    Notdir = 54,
    Notempty = 55,
    Notsock = 57,
    Notsup = 58,
    Perm = 63,
    Rofs = 69,
    Spipe = 70,
    Xdev = 75,
}

/// Why a run must stop now (the host throws to unwind the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abort {
    /// `proc_exit(code)`.
    Exit(i32),
    /// stdout + stderr passed the task's output limit.
    OutputLimit(u32),
    /// `proc_exit` with a status of 126 or more, which wasmtime also treats as an error.
    InvalidExit(u32),
}

/// One task run's WASI state.
pub struct WasiCtx {
    args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    stdin: Vec<u8>,
    stdin_pos: usize,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    max_output: u32,
    clocks: Box<dyn Clocks>,
    random: Box<dyn Random>,
    fs: fs::Fs,
    preopens: Vec<Preopen>,
    fds: Vec<Option<Fd>>,
    /// Bytes of the files in writable preopens, counted against `max_output`.
    file_output: i64,
    /// Set when the run is being stopped; the host reads it after the guest unwinds.
    pub abort: Option<Abort>,
}

impl WasiCtx {
    pub fn new(program: &str, args: &[String], env: &[(String, String)], stdin: Vec<u8>, seed: u64, max_output: u32) -> WasiCtx {
        let nul = |mut v: Vec<u8>| {
            v.push(0);
            v
        };
        WasiCtx {
            args: std::iter::once(program.to_string()).chain(args.iter().cloned()).map(|a| nul(a.into_bytes())).collect(),
            env: env.iter().map(|(k, v)| nul(format!("{k}={v}").into_bytes())).collect(),
            stdin,
            stdin_pos: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            max_output,
            clocks: Box::new(SeededClocks::default()),
            random: Box::new(SeededRandom::new(seed)),
            fs: fs::Fs::default(),
            preopens: Vec::new(),
            fds: fds::stdio(),
            file_output: 0,
            abort: None,
        }
    }

    /// Replaces the virtual clocks (for jobs that opt out of determinism).
    pub fn with_clocks(mut self, clocks: Box<dyn Clocks>) -> WasiCtx {
        self.clocks = clocks;
        self
    }

    /// Replaces the seeded random numbers (for jobs that opt out of determinism).
    pub fn with_random(mut self, random: Box<dyn Random>) -> WasiCtx {
        self.random = random;
        self
    }

    fn sizes(list: &[Vec<u8>], mem: &impl GuestMemory, count_ptr: u32, size_ptr: u32) -> Result<(), Errno> {
        mem.write_u32(count_ptr, list.len() as u32)?;
        mem.write_u32(size_ptr, list.iter().map(|a| a.len() as u32).sum())
    }

    fn strings(list: &[Vec<u8>], mem: &impl GuestMemory, ptrs: u32, buf: u32) -> Result<(), Errno> {
        let mut at = buf;
        for (i, s) in list.iter().enumerate() {
            mem.write_u32(ptrs + 4 * i as u32, at)?;
            mem.write(at, s)?;
            at += s.len() as u32;
        }
        Ok(())
    }

    pub fn args_sizes_get(&self, mem: &impl GuestMemory, argc: u32, size: u32) -> Errno {
        errno(Self::sizes(&self.args, mem, argc, size))
    }
    pub fn args_get(&self, mem: &impl GuestMemory, argv: u32, buf: u32) -> Errno {
        errno(Self::strings(&self.args, mem, argv, buf))
    }
    pub fn environ_sizes_get(&self, mem: &impl GuestMemory, count: u32, size: u32) -> Errno {
        errno(Self::sizes(&self.env, mem, count, size))
    }
    pub fn environ_get(&self, mem: &impl GuestMemory, environ: u32, buf: u32) -> Errno {
        errno(Self::strings(&self.env, mem, environ, buf))
    }

    pub fn clock_res_get(&self, mem: &impl GuestMemory, id: u32, out: u32) -> Errno {
        if id > 3 {
            return Errno::Inval;
        }
        errno(mem.write_u64(out, CLOCK_STEP_NS))
    }

    pub fn clock_time_get(&mut self, mem: &impl GuestMemory, id: u32, out: u32) -> Errno {
        let now = match id {
            0 => self.clocks.realtime_ns(),
            1..=3 => self.clocks.monotonic_ns(),
            _ => return Errno::Inval,
        };
        errno(mem.write_u64(out, now))
    }

    pub fn random_get(&mut self, mem: &impl GuestMemory, buf: u32, len: u32) -> Errno {
        // In chunks, so a huge `len` costs no huge host buffer before the bounds check.
        let mut chunk = [0u8; 4096];
        let mut at = 0u32;
        while at < len {
            let n = (len - at).min(chunk.len() as u32);
            self.random.fill(&mut chunk[..n as usize]);
            let Some(ptr) = buf.checked_add(at) else { return Errno::Fault };
            if let Err(e) = mem.write(ptr, &chunk[..n as usize]) {
                return e;
            }
            at += n;
        }
        Errno::Success
    }

    /// `sock_accept`, `sock_recv`, `sock_send` and `sock_shutdown`: no
    /// descriptor here is a socket, so an open one answers `ENOTSOCK` and any
    /// other `EBADF`, as in wasmtime.
    pub fn sock_call(&self, fd: u32) -> Errno {
        match self.fd(fd) {
            Ok(_) => Errno::Notsock,
            Err(e) => e,
        }
    }

    pub fn proc_exit(&mut self, code: u32) -> Abort {
        let abort = if code < 126 { Abort::Exit(code as i32) } else { Abort::InvalidExit(code) };
        self.abort = Some(abort.clone());
        abort
    }
}

fn errno(r: Result<(), Errno>) -> Errno {
    match r {
        Ok(()) => Errno::Success,
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests;
