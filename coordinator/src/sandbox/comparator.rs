//! Comparator modules: a job whose outputs are not bit-exact (floating point,
//! timestamps, unordered lines) names a WASI module that decides whether two
//! outputs agree. The coordinator runs it natively, in an interpreter (wasmi)
//! with fuel and memory limits, under the same preview1 host the browser
//! worker uses (`idlecore-wasi-host`), so a comparator behaves alike wherever
//! its author tried it.
//!
//! The interface: the comparator is a WASI command run with the arguments
//! `/a /b`; each is a read-only preopened directory holding one output as
//! files: `exit` (the exit code in decimal), `stdout`, `stderr`, and the
//! task's output files under `files/` by guest path (`files/output/a.txt`). Exit code 0 means the outputs agree,
//! 1 that they differ; anything else (another code, a trap, running out of
//! fuel or memory) is an error, counted as "differ" by the caller.

use crate::domain::model::ResultRecord;
use idlecore_wasi_host::{Abort, Errno, SliceMemory, WasiCtx};
use std::time::{Duration, Instant};
use wasmi::{Caller, Config, Engine, Extern, ExternType, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, TrapCode, Val};

use idlecore_wasi_host::WASI;

/// Instructions (wasmi fuel) one comparison may take: a few seconds at most.
pub const FUEL: u64 = 2_000_000_000;
/// Wall-clock time one comparison may take, host calls included (which
/// cost no fuel: a loop of large reads or random fills is bounded by this).
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Table entries a comparator may have (wasmi fills tables at instantiation).
const TABLE_ELEMENTS: usize = 100_000;
/// Linear memory one comparison may use.
pub const MEMORY_BYTES: usize = 256 << 20;
/// stdout + stderr a comparator may write (kept for the log on an error).
const MAX_OUTPUT: u32 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    #[error("comparator exited with {code} (0 = agree, 1 = differ): {stderr}")]
    Exit { code: i64, stderr: String },
    #[error("comparator trapped: {0}")]
    Trap(String),
    #[error("comparator ran out of fuel")]
    OutOfFuel,
    #[error("comparator took longer than {DEADLINE:?}")]
    Timeout,
    #[error("comparator wrote more than {MAX_OUTPUT} bytes")]
    OutputLimit,
    #[error("comparator could not start: {0}")]
    Start(String),
}

/// A compiled comparator, ready to compare any number of output pairs
/// (each in a fresh instance).
pub struct Comparator {
    engine: Engine,
    module: Module,
    linker: Linker<Host>,
    fuel: u64,
    deadline: Duration,
}

/// One comparison's state: its WASI context, limits and deadline.
struct Host {
    ctx: WasiCtx,
    limits: StoreLimits,
    deadline: Instant,
    late: bool,
}

impl Host {
    /// A store for one comparison, its limits in force.
    fn store(engine: &Engine, ctx: WasiCtx, deadline: Duration) -> Store<Host> {
        let mut store = Store::new(engine, Host::new(ctx, deadline));
        store.limiter(|h| &mut h.limits);
        store
    }

    fn new(ctx: WasiCtx, deadline: Duration) -> Host {
        let limits =
            StoreLimitsBuilder::new().memory_size(MEMORY_BYTES).memories(1).tables(1).table_elements(TABLE_ELEMENTS).instances(1).build();
        Host { ctx, limits, deadline: Instant::now() + deadline, late: false }
    }
}

impl Comparator {
    /// Compiles and checks a comparator module: a WASI command (exports
    /// `_start` and `memory`) importing nothing but preview1 functions.
    pub fn new(wasm: &[u8]) -> Result<Comparator, String> {
        let mut config = Config::default();
        config.consume_fuel(true);
        let engine = Engine::new(&config);
        let module = Module::new(&engine, wasm).map_err(|e| format!("not a valid module: {e}"))?;
        if !matches!(module.get_export("_start"), Some(ExternType::Func(f)) if f.params().is_empty() && f.results().is_empty()) {
            return Err("not a WASI command: no `_start` function".into());
        }
        if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
            return Err("not a WASI command: no exported `memory`".into());
        }
        let mut linker = Linker::new(&engine);
        define(&mut linker).map_err(|e| format!("defining the host: {e}"))?;
        for import in module.imports() {
            let (ns, name) = (import.module(), import.name());
            if ns != WASI {
                return Err(format!("imports `{ns}.{name}`: a comparator may import only {WASI} functions"));
            }
            let ExternType::Func(ty) = import.ty() else {
                return Err(format!("imports `{ns}.{name}`, which is not a function"));
            };
            // Preview1 calls return an errno; those this host has no use for
            // (sockets, links...) return ENOSYS. A name defined above is kept
            // (its signature is checked below).
            if ty.results() == [wasmi::ValType::I32] {
                let _already_defined = linker.func_new(ns, name, ty.clone(), |_, _, out| {
                    out[0] = Val::I32(Errno::Nosys as i32);
                    Ok(())
                });
            }
        }
        // Link it once, with no fuel (a start function stops at once): an
        // import with the wrong signature is refused now, not at each comparison.
        let mut store = Host::store(&engine, WasiCtx::new("comparator", &[], &[], vec![], 0, 0), DEADLINE);
        store.set_fuel(0).map_err(|e| e.to_string())?;
        if let Err(e) = linker.instantiate_and_start(&mut store, &module) {
            if e.as_trap_code().is_none() {
                return Err(format!("cannot be linked: {e}"));
            }
        }
        Ok(Comparator { engine, module, linker, fuel: FUEL, deadline: DEADLINE })
    }

    /// The same comparator with another fuel budget and deadline per comparison.
    pub fn with_limits(self, fuel: u64, deadline: Duration) -> Comparator {
        Comparator { fuel, deadline, ..self }
    }

    /// Whether outputs `a` and `b` agree, in the comparator's judgement.
    pub fn agree(&self, a: &ResultRecord, b: &ResultRecord) -> Result<bool, CompareError> {
        let ctx = WasiCtx::new("comparator", &["/a".into(), "/b".into()], &[], Vec::new(), 0, MAX_OUTPUT)
            .with_preopen("/a", false, as_files(a))
            .and_then(|c| c.with_preopen("/b", false, as_files(b)))
            .map_err(CompareError::Start)?;
        let mut store = Host::store(&self.engine, ctx, self.deadline);
        store.set_fuel(self.fuel).map_err(|e| CompareError::Start(e.to_string()))?;
        let instance = self.linker.instantiate_and_start(&mut store, &self.module).map_err(|e| CompareError::Start(e.to_string()))?;
        let start = instance.get_typed_func::<(), ()>(&store, "_start").map_err(|e| CompareError::Start(e.to_string()))?;
        let ran = start.call(&mut store, ());
        let host = store.data();
        let code = match (&host.ctx.abort, ran) {
            _ if host.late => return Err(CompareError::Timeout),
            (Some(Abort::Exit(code)), _) => *code as i64,
            (Some(Abort::InvalidExit(code)), _) => *code as i64,
            (Some(Abort::OutputLimit(_)), _) => return Err(CompareError::OutputLimit),
            (None, Ok(())) => 0,
            (None, Err(e)) if e.as_trap_code() == Some(TrapCode::OutOfFuel) => return Err(CompareError::OutOfFuel),
            (None, Err(e)) => return Err(CompareError::Trap(e.to_string())),
        };
        match code {
            0 => Ok(true),
            1 => Ok(false),
            code => {
                let stderr = String::from_utf8_lossy(&host.ctx.stderr[..host.ctx.stderr.len().min(500)]).into_owned();
                Err(CompareError::Exit { code, stderr })
            }
        }
    }
}

/// An output as the comparator sees it: `exit`, `stdout`, `stderr`, `files/…`.
fn as_files(r: &ResultRecord) -> Vec<(String, Vec<u8>)> {
    let exit = r.exit_code.map(|c| c.to_string()).unwrap_or_default();
    let mut files = vec![("exit".to_string(), exit.into_bytes()), ("stdout".into(), r.stdout.clone()), ("stderr".into(), r.stderr.clone())];
    // Result files are named by full guest path (`/output/a.txt`): `files/output/a.txt`.
    files.extend(r.files.0.iter().map(|(path, data)| (format!("files/{}", path.trim_start_matches('/')), data.clone())));
    files
}

/// What a host function's body gives back: an errno, or a reason to stop.
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

/// Runs `f` with the caller's WASI context and memory, unless the
/// comparison is past its deadline.
fn call(caller: &mut Caller<'_, Host>, f: impl FnOnce(&mut WasiCtx, &SliceMemory) -> Result<Errno, Abort>) -> Result<i32, wasmi::Error> {
    if Instant::now() > caller.data().deadline {
        caller.data_mut().late = true;
        return Err(wasmi::Error::new("idlecore: past the comparison's deadline"));
    }
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else { return Ok(Errno::Fault as i32) };
    let (data, host) = memory.data_and_store_mut(caller);
    match f(&mut host.ctx, &SliceMemory::new(data)) {
        Ok(errno) => Ok(errno as i32),
        Err(abort) => {
            host.ctx.abort = Some(abort);
            Err(wasmi::Error::new("idlecore: the comparator stopped"))
        }
    }
}

macro_rules! wasi {
    ($linker:expr, $name:literal, |$ctx:ident, $mem:ident $(, $a:ident : $t:ty)*| $body:expr) => {
        $linker.func_wrap(WASI, $name, |mut caller: Caller<'_, Host>, $($a: $t),*| -> Result<i32, wasmi::Error> {
            call(&mut caller, |$ctx, $mem| Outcome::into_result($body))
        })?;
    };
}

/// The preview1 functions a comparator may use: reading its inputs,
/// writing to stdout/stderr, args, clocks, random numbers, exit.
fn define(l: &mut Linker<Host>) -> Result<(), wasmi::errors::LinkerError> {
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
    wasi!(l, "fd_write", |c, m, fd: u32, iov: u32, n: u32, out: u32| c.fd_write(m, fd, iov, n, out));
    wasi!(l, "fd_seek", |c, m, fd: u32, off: i64, wh: u32, out: u32| c.fd_seek(m, fd, off, wh, out));
    wasi!(l, "fd_tell", |c, m, fd: u32, out: u32| c.fd_tell(m, fd, out));
    wasi!(l, "fd_close", |c, _m, fd: u32| c.fd_close(fd));
    wasi!(l, "fd_advise", |c, _m, fd: u32, _o: i64, _l: i64, _a: u32| c.fd_check(fd));
    wasi!(l, "fd_fdstat_get", |c, m, fd: u32, out: u32| c.fd_fdstat_get(m, fd, out));
    wasi!(l, "fd_fdstat_set_flags", |c, _m, fd: u32, flags: u32| c.fd_fdstat_set_flags(fd, flags));
    wasi!(l, "fd_filestat_get", |c, m, fd: u32, out: u32| c.fd_filestat_get(m, fd, out));
    wasi!(l, "fd_prestat_get", |c, m, fd: u32, out: u32| c.fd_prestat_get(m, fd, out));
    wasi!(l, "fd_prestat_dir_name", |c, m, fd: u32, p: u32, len: u32| c.fd_prestat_dir_name(m, fd, p, len));
    wasi!(l, "fd_readdir", |c, m, fd: u32, b: u32, len: u32, ck: i64, out: u32| c.fd_readdir(m, fd, b, len, ck as u64, out));
    wasi!(l, "path_filestat_get", |c, m, fd: u32, _f: u32, p: u32, len: u32, out: u32| c.path_filestat_get(m, fd, p, len, out));
    wasi!(l, "path_readlink", |c, m, fd: u32, p: u32, len: u32, _b: u32, _bl: u32, _out: u32| c.path_readlink(m, fd, p, len));
    wasi!(l, "path_open", |c, m, fd: u32, _df: u32, p: u32, len: u32, of: u32, rights: i64, _ri: i64, ff: u32, out: u32| {
        c.path_open(m, fd, p, len, of, rights as u64, ff, out)
    });
    wasi!(l, "sock_accept", |c, _m, fd: u32, _f: u32, _out: u32| c.sock_call(fd));
    wasi!(l, "sock_recv", |c, _m, fd: u32, _d: u32, _n: u32, _f: u32, _o1: u32, _o2: u32| c.sock_call(fd));
    wasi!(l, "sock_send", |c, _m, fd: u32, _d: u32, _n: u32, _f: u32, _out: u32| c.sock_call(fd));
    wasi!(l, "sock_shutdown", |c, _m, fd: u32, _how: u32| c.sock_call(fd));
    l.func_wrap(WASI, "proc_exit", |mut caller: Caller<'_, Host>, code: u32| -> Result<(), wasmi::Error> {
        let abort = caller.data_mut().ctx.proc_exit(code);
        Err(wasmi::Error::new(format!("idlecore: {abort:?}")))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
