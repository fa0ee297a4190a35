//! The preview1 imports for wasmtime: each bound to the [`WasiCtx`] method of
//! the same name, exactly as the browser executor binds them (`src/executor/
//! js_host.rs`), so a module sees the same host natively as in Chromium.
//! Real clocks and entropy, for jobs that opt out of determinism, are here
//! too.

use idlecore_wasi_host::{Abort, Errno, SliceMemory, WasiCtx, WASI};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::{Caller, Engine, Linker, Memory, StoreLimits};

/// What a store holds for one instance: the current run's WASI state, the
/// instance's memory once known, its limits, and what may stop the run.
pub struct Host {
    pub ctx: WasiCtx,
    pub memory: Option<Memory>,
    pub limits: StoreLimits,
    pub stop: Stop,
}

/// What ends a run early: the executor being stopped (its slot given a new
/// executor, or the worker stopping) or a deadline of its own.
#[derive(Clone, Default)]
pub struct Stop {
    pub cancel: Arc<AtomicBool>,
    pub deadline: Option<Instant>,
}

impl Stop {
    /// Whether the run must end now.
    pub fn due(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// The message a host call unwinds the guest with when the run must stop.
pub const HOST_ABORT: &str = "idlecore: the host stopped the run";

/// Runs `f` with the run's WASI state and the guest's memory. Before the
/// instance's memory is known (a start function), calls fail with EFAULT,
/// as in the browser.
fn call(caller: &mut Caller<'_, Host>, f: impl FnOnce(&mut WasiCtx, &SliceMemory) -> Result<Errno, Abort>) -> wasmtime::Result<i32> {
    let Some(memory) = caller.data().memory else { return Ok(Errno::Fault as i32) };
    let (data, host) = memory.data_and_store_mut(caller);
    match f(&mut host.ctx, &SliceMemory::new(data)) {
        Ok(errno) => Ok(errno as i32),
        Err(abort) => {
            host.ctx.abort = Some(abort);
            Err(wasmtime::Error::msg(HOST_ABORT))
        }
    }
}

/// What a binding's body gives back: an errno, or a reason to stop.
trait Outcome {
    fn into_result(self) -> Result<Errno, Abort>;
}
impl Outcome for Errno {
    fn into_result(self) -> Result<Errno, Abort> {
        Ok(self)
    }
}
impl Outcome for Result<Errno, Abort> {
    fn into_result(self) -> Result<Errno, Abort> {
        self
    }
}

macro_rules! wasi {
    ($linker:expr, $name:literal, |$ctx:ident, $mem:ident $(, $a:ident : $t:ty)*| $body:expr) => {
        $linker.func_wrap(WASI, $name, |mut caller: Caller<'_, Host>, $($a: $t),*| -> wasmtime::Result<i32> {
            call(&mut caller, |$ctx, $mem| Outcome::into_result($body))
        })?;
    };
}

/// A linker with every preview1 function: those the browser host answers
/// with `ENOSYS` answer it here too.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<Host>> {
    let mut l = Linker::new(engine);
    for name in ["fd_fdstat_set_rights", "proc_raise"] {
        define_nosys(&mut l, name)?;
    }
    wasi!(l, "args_sizes_get", |c, m, a: u32, b: u32| c.args_sizes_get(m, a, b));
    wasi!(l, "args_get", |c, m, a: u32, b: u32| c.args_get(m, a, b));
    wasi!(l, "environ_sizes_get", |c, m, a: u32, b: u32| c.environ_sizes_get(m, a, b));
    wasi!(l, "environ_get", |c, m, a: u32, b: u32| c.environ_get(m, a, b));
    wasi!(l, "clock_res_get", |c, m, id: u32, out: u32| c.clock_res_get(m, id, out));
    wasi!(l, "clock_time_get", |c, m, id: u32, _p: i64, out: u32| c.clock_time_get(m, id, out));
    wasi!(l, "random_get", |c, m, buf: u32, len: u32| c.random_get(m, buf, len));
    wasi!(l, "poll_oneoff", |c, m, i: u32, o: u32, n: u32, out: u32| c.poll_oneoff(m, i, o, n, out));
    wasi!(l, "sched_yield", |_c, _m| Errno::Success);
    wasi!(l, "fd_read", |c, m, fd: u32, iov: u32, n: u32, out: u32| c.fd_read(m, fd, iov, n, out));
    wasi!(l, "fd_pread", |c, m, fd: u32, iov: u32, n: u32, off: i64, out: u32| c.fd_pread(m, fd, iov, n, off as u64, out));
    wasi!(l, "fd_seek", |c, m, fd: u32, off: i64, wh: u32, out: u32| c.fd_seek(m, fd, off, wh, out));
    wasi!(l, "fd_tell", |c, m, fd: u32, out: u32| c.fd_tell(m, fd, out));
    wasi!(l, "fd_close", |c, _m, fd: u32| c.fd_close(fd));
    wasi!(l, "fd_renumber", |c, _m, from: u32, to: u32| c.fd_renumber(from, to));
    wasi!(l, "fd_sync", |c, _m, fd: u32| c.fd_check(fd));
    wasi!(l, "fd_datasync", |c, _m, fd: u32| c.fd_check(fd));
    wasi!(l, "fd_advise", |c, _m, fd: u32, _o: i64, _l: i64, _a: u32| c.fd_check(fd));
    wasi!(l, "fd_fdstat_get", |c, m, fd: u32, out: u32| c.fd_fdstat_get(m, fd, out));
    wasi!(l, "fd_fdstat_set_flags", |c, _m, fd: u32, flags: u32| c.fd_fdstat_set_flags(fd, flags));
    wasi!(l, "fd_filestat_get", |c, m, fd: u32, out: u32| c.fd_filestat_get(m, fd, out));
    wasi!(l, "fd_filestat_set_times", |c, _m, fd: u32, _a: i64, _b: i64, _f: u32| c.fd_check(fd));
    wasi!(l, "fd_prestat_get", |c, m, fd: u32, out: u32| c.fd_prestat_get(m, fd, out));
    wasi!(l, "fd_prestat_dir_name", |c, m, fd: u32, p: u32, len: u32| c.fd_prestat_dir_name(m, fd, p, len));
    wasi!(l, "fd_readdir", |c, m, fd: u32, b: u32, len: u32, ck: i64, out: u32| c.fd_readdir(m, fd, b, len, ck as u64, out));
    wasi!(l, "path_filestat_get", |c, m, fd: u32, _f: u32, p: u32, len: u32, out: u32| c.path_filestat_get(m, fd, p, len, out));
    wasi!(l, "path_filestat_set_times", |c, m, fd: u32, _f: u32, p: u32, len: u32, _a: i64, _b: i64, _g: u32| c
        .path_filestat_set_times(m, fd, p, len));
    wasi!(l, "path_create_directory", |c, m, fd: u32, p: u32, len: u32| c.path_create_directory(m, fd, p, len));
    wasi!(l, "path_remove_directory", |c, m, fd: u32, p: u32, len: u32| c.path_remove_directory(m, fd, p, len));
    wasi!(l, "path_unlink_file", |c, m, fd: u32, p: u32, len: u32| c.path_unlink_file(m, fd, p, len));
    wasi!(l, "path_rename", |c, m, fd: u32, p: u32, len: u32, fd2: u32, p2: u32, len2: u32| c.path_rename(m, fd, p, len, fd2, p2, len2));
    wasi!(l, "path_readlink", |c, m, fd: u32, p: u32, len: u32, _b: u32, _bl: u32, _out: u32| c.path_readlink(m, fd, p, len));
    wasi!(l, "path_symlink", |_c, _m, _p: u32, _l: u32, _fd: u32, _p2: u32, _l2: u32| Errno::Notsup);
    wasi!(l, "path_link", |_c, _m, _fd: u32, _f: u32, _p: u32, _l: u32, _fd2: u32, _p2: u32, _l2: u32| Errno::Notsup);
    wasi!(l, "fd_allocate", |_c, _m, _fd: u32, _o: i64, _l: i64| Errno::Notsup);
    wasi!(l, "sock_accept", |c, _m, fd: u32, _f: u32, _out: u32| c.sock_call(fd));
    wasi!(l, "sock_recv", |c, _m, fd: u32, _d: u32, _n: u32, _f: u32, _o1: u32, _o2: u32| c.sock_call(fd));
    wasi!(l, "sock_send", |c, _m, fd: u32, _d: u32, _n: u32, _f: u32, _out: u32| c.sock_call(fd));
    wasi!(l, "sock_shutdown", |c, _m, fd: u32, _how: u32| c.sock_call(fd));
    // Calls that can stop the run (the output limit).
    wasi!(l, "fd_write", |c, m, fd: u32, iov: u32, n: u32, out: u32| c.fd_write(m, fd, iov, n, out));
    wasi!(l, "fd_pwrite", |c, m, fd: u32, iov: u32, n: u32, off: i64, out: u32| c.fd_pwrite(m, fd, iov, n, off as u64, out));
    wasi!(l, "fd_filestat_set_size", |c, _m, fd: u32, size: i64| c.fd_filestat_set_size(fd, size as u64));
    wasi!(l, "path_open", |c, m, fd: u32, _df: u32, p: u32, len: u32, of: u32, rights: i64, _ri: i64, ff: u32, out: u32| {
        c.path_open(m, fd, p, len, of, rights as u64, ff, out)
    });
    l.func_wrap(WASI, "proc_exit", |mut caller: Caller<'_, Host>, code: u32| -> wasmtime::Result<()> {
        caller.data_mut().ctx.proc_exit(code);
        Err(wasmtime::Error::msg(HOST_ABORT))
    })?;
    Ok(l)
}

/// Defines `name` with its preview1 signature, answering `ENOSYS`: the
/// calls the host has no resource for, as in the browser.
fn define_nosys(l: &mut Linker<Host>, name: &str) -> wasmtime::Result<()> {
    use wasmtime::ValType::{I32, I64};
    let params: &[wasmtime::ValType] = match name {
        "fd_fdstat_set_rights" => &[I32, I64, I64],
        _ => &[I32], // proc_raise
    };
    let ty = wasmtime::FuncType::new(l.engine(), params.iter().cloned(), [I32]);
    l.func_new(WASI, name, ty, |_, _, out| {
        out[0] = wasmtime::Val::I32(Errno::Nosys as i32);
        Ok(())
    })?;
    Ok(())
}

/// The machine's clocks, for jobs that opt out of determinism.
pub struct RealClocks {
    origin: Instant,
    /// A sleep ends early when the run must stop.
    stop: Stop,
}

impl idlecore_wasi_host::Clocks for RealClocks {
    fn realtime_ns(&mut self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
    fn sleep(&mut self, ns: u64) {
        // In short naps, so a run stopped while asleep ends within one.
        let until = self.monotonic_ns().saturating_add(ns);
        while !self.stop.due() {
            let left = until.saturating_sub(self.monotonic_ns());
            if left == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_nanos(left.min(5_000_000)));
        }
    }
}

/// The operating system's entropy, for jobs that opt out of determinism.
pub struct RealRandom;

impl idlecore_wasi_host::Random for RealRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        if getrandom::fill(buf).is_err() {
            buf.fill(0);
        }
    }
}

/// Real time and entropy for a run that `stop` may end (see
/// `idlecore_wasi_host::task::context`).
pub fn host_sources(stop: &Stop) -> idlecore_wasi_host::task::HostSources {
    (Box::new(RealClocks { origin: Instant::now(), stop: stop.clone() }), Box::new(RealRandom))
}
