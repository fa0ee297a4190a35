//! The browser side of the WASI host: one `wasi_snapshot_preview1` import
//! object per thread whose functions call into the current run's [`WasiCtx`],
//! the guest memory as seen through JS, and the browser's real clocks and
//! entropy.

use idlecore_wasi_host::{Abort, Errno, GuestMemory, WasiCtx, PREVIEW1, WASI};
use js_sys::{Function, Object, Reflect, Uint8Array, WebAssembly};
use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// The browser's real clocks, for jobs that opt out of determinism.
pub struct BrowserClocks {
    scope: web_sys::WorkerGlobalScope,
}

impl Default for BrowserClocks {
    fn default() -> Self {
        BrowserClocks { scope: js_sys::global().unchecked_into() }
    }
}

/// `crypto.getRandomValues`, for jobs that opt out of determinism.
pub struct BrowserRandom {
    scope: web_sys::WorkerGlobalScope,
}

impl Default for BrowserRandom {
    fn default() -> Self {
        BrowserRandom { scope: js_sys::global().unchecked_into() }
    }
}

/// Real time and entropy (see `idlecore_wasi_host::task::context`).
pub fn host_sources() -> idlecore_wasi_host::task::HostSources {
    (Box::<BrowserClocks>::default(), Box::<BrowserRandom>::default())
}

impl idlecore_wasi_host::Clocks for BrowserClocks {
    fn realtime_ns(&mut self) -> u64 {
        (js_sys::Date::now() * 1e6) as u64
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.scope.performance().map(|p| (p.now() * 1e6) as u64).unwrap_or(0)
    }
    /// A worker cannot block without shared memory: spin until the time has passed
    /// (bounded by the task's deadline like any other busy loop).
    fn sleep(&mut self, ns: u64) {
        let until = self.monotonic_ns().saturating_add(ns);
        while self.monotonic_ns() < until {}
    }
}

impl idlecore_wasi_host::Random for BrowserRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        if let Ok(crypto) = self.scope.crypto() {
            // getRandomValues takes at most 65536 bytes at a time.
            for chunk in buf.chunks_mut(65536) {
                let _ = crypto.get_random_values_with_u8_array(chunk);
            }
        }
    }
}

/// The guest's memory as seen from JS. The view is kept between calls and
/// made again only when the guest grew its memory (which detaches the old
/// buffer, leaving the view empty).
struct JsMemory {
    memory: WebAssembly::Memory,
    view: RefCell<Uint8Array>,
}

impl JsMemory {
    fn new(memory: WebAssembly::Memory) -> JsMemory {
        let view = Uint8Array::new(&memory.buffer());
        JsMemory { memory, view: RefCell::new(view) }
    }

    /// The current view and its length.
    fn view(&self) -> (Uint8Array, usize) {
        let mut view = self.view.borrow_mut();
        let mut len = view.length();
        if len == 0 {
            *view = Uint8Array::new(&self.memory.buffer());
            len = view.length();
        }
        (view.clone(), len as usize)
    }
}

impl GuestMemory for JsMemory {
    fn read(&self, ptr: u32, len: u32) -> Result<Vec<u8>, Errno> {
        let (view, size) = self.view();
        let (s, e) = idlecore_wasi_host::in_bounds(ptr, len, size)?;
        Ok(view.subarray(s as u32, e as u32).to_vec())
    }
    fn write(&self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let (view, size) = self.view();
        let (s, e) = idlecore_wasi_host::in_bounds(ptr, data.len() as u32, size)?;
        view.subarray(s as u32, e as u32).copy_from(data);
        Ok(())
    }
}

/// What each import closure shares: the task's state and, once instantiated, its memory.
#[derive(Clone)]
struct Shared {
    ctx: Rc<RefCell<WasiCtx>>,
    mem: Rc<RefCell<Option<JsMemory>>>,
}

impl Shared {
    fn with(&self, f: impl FnOnce(&mut WasiCtx, &JsMemory) -> Errno) -> i32 {
        match self.mem.borrow().as_ref() {
            Some(mem) => f(&mut self.ctx.borrow_mut(), mem) as i32,
            // Called from a start function, before memory is known.
            None => Errno::Fault as i32,
        }
    }
}

#[wasm_bindgen(inline_js = "export function spread9(f) { return (a, b, c, d, e, g, h, i, j) => f([a, b, c, d, e, g, h, i, j]); }")]
extern "C" {
    /// Wraps a one-array-argument closure as a nine-argument function.
    fn spread9(f: &Closure<dyn FnMut(js_sys::Array) -> Result<i32, JsValue>>) -> Function;
}

macro_rules! aborting {
    ($obj:expr, $keep:expr, $shared:expr, $name:literal, |$ctx:ident, $mem:ident $(, $a:ident : $t:ty)*| $body:expr) => {{
        let s = $shared.clone();
        let c = Closure::<dyn FnMut($($t),*) -> Result<i32, JsValue>>::new(move |$($a: $t),*| {
            let mem = s.mem.borrow();
            let $mem = mem.as_ref().ok_or_else(|| JsValue::from_str(concat!($name, " before memory")))?;
            let $ctx = &mut *s.ctx.borrow_mut();
            let r: Result<Errno, Abort> = $body;
            r.map(|e| e as i32).map_err(|_| JsValue::from_str("idlecore: output limit"))
        });
        Reflect::set(&$obj, &$name.into(), c.as_ref()).expect("set import");
        $keep.push(Box::new(c) as Box<dyn Any>);
    }};
}

macro_rules! import {
    ($obj:expr, $keep:expr, $shared:expr, $name:literal, |$ctx:ident, $mem:ident $(, $a:ident : $t:ty)*| $body:expr) => {{
        let s = $shared.clone();
        let c = Closure::<dyn FnMut($($t),*) -> i32>::new(move |$($a: $t),*| s.with(|$ctx, $mem| $body));
        Reflect::set(&$obj, &$name.into(), c.as_ref()).expect("set import");
        $keep.push(Box::new(c) as Box<dyn Any>);
    }};
}

/// Builds the import object. The closures live in `keep` until the run ends.
fn imports(shared: &Shared, keep: &mut Vec<Box<dyn Any>>) -> Object {
    let wasi = Object::new();
    let nosys = Closure::<dyn FnMut() -> i32>::new(|| Errno::Nosys as i32);
    for name in PREVIEW1 {
        Reflect::set(&wasi, &(*name).into(), nosys.as_ref()).expect("set import");
    }
    keep.push(Box::new(nosys));
    let sched_yield = Closure::<dyn FnMut() -> i32>::new(|| 0);
    Reflect::set(&wasi, &"sched_yield".into(), sched_yield.as_ref()).expect("set import");
    keep.push(Box::new(sched_yield));

    import!(wasi, keep, shared, "args_sizes_get", |c, m, a: u32, b: u32| c.args_sizes_get(m, a, b));
    import!(wasi, keep, shared, "args_get", |c, m, a: u32, b: u32| c.args_get(m, a, b));
    import!(wasi, keep, shared, "environ_sizes_get", |c, m, a: u32, b: u32| c.environ_sizes_get(m, a, b));
    import!(wasi, keep, shared, "environ_get", |c, m, a: u32, b: u32| c.environ_get(m, a, b));
    import!(wasi, keep, shared, "clock_res_get", |c, m, id: u32, out: u32| c.clock_res_get(m, id, out));
    import!(wasi, keep, shared, "clock_time_get", |c, m, id: u32, _p: i64, out: u32| c.clock_time_get(m, id, out));
    import!(wasi, keep, shared, "random_get", |c, m, buf: u32, len: u32| c.random_get(m, buf, len));
    import!(wasi, keep, shared, "poll_oneoff", |c, m, i: u32, o: u32, n: u32, out: u32| c.poll_oneoff(m, i, o, n, out));
    import!(wasi, keep, shared, "fd_read", |c, m, fd: u32, iov: u32, n: u32, out: u32| c.fd_read(m, fd, iov, n, out));
    import!(wasi, keep, shared, "fd_pread", |c, m, fd: u32, iov: u32, n: u32, off: i64, out: u32| c
        .fd_pread(m, fd, iov, n, off as u64, out));
    import!(wasi, keep, shared, "fd_seek", |c, m, fd: u32, off: i64, wh: u32, out: u32| c.fd_seek(m, fd, off, wh, out));
    import!(wasi, keep, shared, "fd_tell", |c, m, fd: u32, out: u32| c.fd_tell(m, fd, out));
    import!(wasi, keep, shared, "fd_close", |c, _m, fd: u32| c.fd_close(fd));
    import!(wasi, keep, shared, "fd_renumber", |c, _m, from: u32, to: u32| c.fd_renumber(from, to));
    import!(wasi, keep, shared, "fd_sync", |c, _m, fd: u32| c.fd_check(fd));
    import!(wasi, keep, shared, "fd_datasync", |c, _m, fd: u32| c.fd_check(fd));
    import!(wasi, keep, shared, "fd_advise", |c, _m, fd: u32, _o: i64, _l: i64, _a: u32| c.fd_check(fd));
    import!(wasi, keep, shared, "fd_fdstat_get", |c, m, fd: u32, out: u32| c.fd_fdstat_get(m, fd, out));
    import!(wasi, keep, shared, "fd_fdstat_set_flags", |c, _m, fd: u32, flags: u32| c.fd_fdstat_set_flags(fd, flags));
    import!(wasi, keep, shared, "fd_filestat_get", |c, m, fd: u32, out: u32| c.fd_filestat_get(m, fd, out));
    import!(wasi, keep, shared, "fd_filestat_set_times", |c, _m, fd: u32, _a: i64, _b: i64, _f: u32| c.fd_check(fd));
    import!(wasi, keep, shared, "fd_prestat_get", |c, m, fd: u32, out: u32| c.fd_prestat_get(m, fd, out));
    import!(wasi, keep, shared, "fd_prestat_dir_name", |c, m, fd: u32, p: u32, l: u32| c.fd_prestat_dir_name(m, fd, p, l));
    import!(wasi, keep, shared, "fd_readdir", |c, m, fd: u32, b: u32, l: u32, ck: i64, out: u32| c.fd_readdir(m, fd, b, l, ck as u64, out));
    import!(wasi, keep, shared, "path_filestat_get", |c, m, fd: u32, _f: u32, p: u32, l: u32, out: u32| c
        .path_filestat_get(m, fd, p, l, out));
    import!(wasi, keep, shared, "path_filestat_set_times", |c, m, fd: u32, _f: u32, p: u32, l: u32, _a: i64, _b: i64, _g: u32| c
        .path_filestat_set_times(m, fd, p, l));
    import!(wasi, keep, shared, "path_create_directory", |c, m, fd: u32, p: u32, l: u32| c.path_create_directory(m, fd, p, l));
    import!(wasi, keep, shared, "path_remove_directory", |c, m, fd: u32, p: u32, l: u32| c.path_remove_directory(m, fd, p, l));
    import!(wasi, keep, shared, "path_unlink_file", |c, m, fd: u32, p: u32, l: u32| c.path_unlink_file(m, fd, p, l));
    import!(wasi, keep, shared, "path_rename", |c, m, fd: u32, p: u32, l: u32, fd2: u32, p2: u32, l2: u32| c
        .path_rename(m, fd, p, l, fd2, p2, l2));
    import!(wasi, keep, shared, "path_readlink", |c, m, fd: u32, p: u32, l: u32, _b: u32, _bl: u32, _out: u32| c
        .path_readlink(m, fd, p, l));
    import!(wasi, keep, shared, "path_symlink", |_c, _m, _p: u32, _l: u32, _fd: u32, _p2: u32, _l2: u32| Errno::Notsup);
    import!(wasi, keep, shared, "path_link", |_c, _m, _fd: u32, _f: u32, _p: u32, _l: u32, _fd2: u32, _p2: u32, _l2: u32| Errno::Notsup);
    import!(wasi, keep, shared, "fd_allocate", |_c, _m, _fd: u32, _o: i64, _l: i64| Errno::Notsup);
    import!(wasi, keep, shared, "sock_accept", |c, _m, fd: u32, _f: u32, _out: u32| c.sock_call(fd));
    import!(wasi, keep, shared, "sock_recv", |c, _m, fd: u32, _d: u32, _n: u32, _f: u32, _o1: u32, _o2: u32| c.sock_call(fd));
    import!(wasi, keep, shared, "sock_send", |c, _m, fd: u32, _d: u32, _n: u32, _f: u32, _out: u32| c.sock_call(fd));
    import!(wasi, keep, shared, "sock_shutdown", |c, _m, fd: u32, _how: u32| c.sock_call(fd));

    // Calls that can stop the run (output limit) throw to unwind the guest.
    aborting!(wasi, keep, shared, "fd_write", |c, m, fd: u32, iov: u32, n: u32, out: u32| c.fd_write(m, fd, iov, n, out));
    aborting!(wasi, keep, shared, "fd_pwrite", |c, m, fd: u32, iov: u32, n: u32, off: i64, out: u32| c
        .fd_pwrite(m, fd, iov, n, off as u64, out));
    aborting!(wasi, keep, shared, "fd_filestat_set_size", |c, _m, fd: u32, size: i64| c.fd_filestat_set_size(fd, size as u64));
    // path_open has nine parameters, one more than a Rust closure can take:
    // a one-line JS wrapper hands them over as an array.
    let s = shared.clone();
    let path_open = Closure::<dyn FnMut(js_sys::Array) -> Result<i32, JsValue>>::new(move |a: js_sys::Array| {
        let n = |i: u32| a.get(i).as_f64().unwrap_or(0.0) as u32;
        let rights = a.get(5).dyn_into::<js_sys::BigInt>().ok().map(|b| js_sys::BigInt::as_uint_n(64.0, &b));
        let rights = rights.and_then(|b| b.to_string(10).ok()).and_then(|t| String::from(t).parse::<u64>().ok()).unwrap_or(0);
        let mem = s.mem.borrow();
        let mem = mem.as_ref().ok_or_else(|| JsValue::from_str("path_open before memory"))?;
        let r = s.ctx.borrow_mut().path_open(mem, n(0), n(2), n(3), n(4), rights, n(7), n(8));
        r.map(|e| e as i32).map_err(|_| JsValue::from_str("idlecore: output limit"))
    });
    Reflect::set(&wasi, &"path_open".into(), &spread9(&path_open)).expect("set import");
    keep.push(Box::new(path_open));
    let s = shared.clone();
    let proc_exit = Closure::<dyn FnMut(u32) -> Result<(), JsValue>>::new(move |code| {
        s.ctx.borrow_mut().proc_exit(code);
        Err(JsValue::from_str("idlecore: proc_exit"))
    });
    Reflect::set(&wasi, &"proc_exit".into(), proc_exit.as_ref()).expect("set import");
    keep.push(Box::new(proc_exit));

    let imports = Object::new();
    Reflect::set(&imports, &WASI.into(), &wasi).expect("set namespace");
    imports
}

/// The import object of this thread, built once: its closures reach each
/// run's state through `shared`, which every run refills.
pub(super) struct Host {
    shared: Shared,
    imports: Object,
    _keep: Vec<Box<dyn Any>>,
}

impl Host {
    pub(super) fn imports(&self) -> &Object {
        &self.imports
    }

    /// Installs a run's state. Until [`Host::attach`], calls fail with EFAULT
    /// (a start function runs before its instance's memory is known).
    pub(super) fn begin(&self, ctx: WasiCtx) {
        *self.shared.ctx.borrow_mut() = ctx;
        *self.shared.mem.borrow_mut() = None;
    }

    pub(super) fn attach(&self, memory: WebAssembly::Memory) {
        *self.shared.mem.borrow_mut() = Some(JsMemory::new(memory));
    }

    /// Takes the run's state out, leaving an empty one. The instance's memory
    /// is let go too: the host keeps nothing of a run.
    pub(super) fn finish(&self) -> WasiCtx {
        *self.shared.mem.borrow_mut() = None;
        std::mem::replace(&mut *self.shared.ctx.borrow_mut(), empty_ctx())
    }
}

fn empty_ctx() -> WasiCtx {
    WasiCtx::new("", &[], &[], Vec::new(), 0, 0)
}

thread_local! {
    static HOST: RefCell<Option<Rc<Host>>> = const { RefCell::new(None) };
}

pub(super) fn host() -> Rc<Host> {
    HOST.with(|h| {
        h.borrow_mut()
            .get_or_insert_with(|| {
                let shared = Shared { ctx: Rc::new(RefCell::new(empty_ctx())), mem: Rc::new(RefCell::new(None)) };
                let mut keep = Vec::new();
                let imports = imports(&shared, &mut keep);
                Rc::new(Host { shared, imports, _keep: keep })
            })
            .clone()
    })
}
