// The baseline the execution benchmarks compare idlecore against: a minimal
// WASI preview1 shim in plain JavaScript, the way browser WASI runners
// commonly do it (args, stdin, stdout, stderr, exit; everything else ENOSYS).
// No limits, no checks, no sandbox: the cheapest a run can be.

const ENOSYS = 52;
const enc = new TextEncoder();

class Exit { constructor(code) { this.code = code; } }

function shim(args, stdin) {
  let memory = null;
  let stdinAt = 0;
  const out = [];
  const view = () => new DataView(memory.buffer);
  const bytes = () => new Uint8Array(memory.buffer);
  const encoded = args.map((a) => enc.encode(a + '\0'));
  const wasi = {
    args_sizes_get(count, size) {
      view().setUint32(count, encoded.length, true);
      view().setUint32(size, encoded.reduce((n, a) => n + a.length, 0), true);
      return 0;
    },
    args_get(argv, buf) {
      for (const a of encoded) {
        view().setUint32(argv, buf, true);
        bytes().set(a, buf);
        argv += 4;
        buf += a.length;
      }
      return 0;
    },
    environ_sizes_get(count, size) {
      view().setUint32(count, 0, true);
      view().setUint32(size, 0, true);
      return 0;
    },
    environ_get() { return 0; },
    fd_write(fd, iovs, n, written) {
      let total = 0;
      for (let i = 0; i < n; i++) {
        const ptr = view().getUint32(iovs + 8 * i, true);
        const len = view().getUint32(iovs + 8 * i + 4, true);
        if (fd === 1) out.push(bytes().slice(ptr, ptr + len));
        total += len;
      }
      view().setUint32(written, total, true);
      return 0;
    },
    fd_read(fd, iovs, n, read) {
      let total = 0;
      for (let i = 0; i < n && fd === 0; i++) {
        const ptr = view().getUint32(iovs + 8 * i, true);
        const len = view().getUint32(iovs + 8 * i + 4, true);
        const chunk = stdin.subarray(stdinAt, stdinAt + len);
        bytes().set(chunk, ptr);
        stdinAt += chunk.length;
        total += chunk.length;
      }
      view().setUint32(read, total, true);
      return 0;
    },
    proc_exit(code) { throw new Exit(code); },
  };
  const imports = new Proxy(wasi, { get: (t, k) => (k in t ? t[k] : () => ENOSYS) });
  return { imports, setMemory: (m) => { memory = m; }, out };
}

/// Instantiates `module` against the shim, runs `_start`, returns stdout's length.
export function bare_run(module, args, stdin) {
  const s = shim(args, stdin);
  // WebAssembly.Instance reads each import it needs from the object it is given.
  const wasi = {};
  for (const imp of WebAssembly.Module.imports(module)) wasi[imp.name] = s.imports[imp.name];
  const instance = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi });
  s.setMemory(instance.exports.memory);
  try {
    instance.exports._start();
  } catch (e) {
    if (!(e instanceof Exit)) throw e;
  }
  return s.out.reduce((n, c) => n + c.length, 0);
}

export function bare_profile(module, args, stdin, n) {
  let tInst = 0, tStart = 0, tImports = 0;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const s = shim(args, stdin);
    const wasi = {};
    for (const imp of WebAssembly.Module.imports(module)) wasi[imp.name] = s.imports[imp.name];
    const t1 = performance.now();
    const instance = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi });
    const t2 = performance.now();
    s.setMemory(instance.exports.memory);
    try { instance.exports._start(); } catch (e) { if (!(e instanceof Exit)) throw e; }
    const t3 = performance.now();
    tImports += t1 - t0; tInst += t2 - t1; tStart += t3 - t2;
  }
  return `imports ${(tImports / n * 1000).toFixed(1)} inst ${(tInst / n * 1000).toFixed(1)} start ${(tStart / n * 1000).toFixed(1)} pages ${new WebAssembly.Instance(module, {wasi_snapshot_preview1: new Proxy({}, {get: () => () => 52})}).exports.memory.buffer.byteLength / 65536}`;
}

export function micro_profile(empty, module, n) {
  const t = (f) => { f(); const a = performance.now(); for (let i = 0; i < n; i++) f(); return ((performance.now() - a) / n * 1000).toFixed(1); };
  const mem17 = t(() => new WebAssembly.Memory({ initial: 17 }));
  const mem17touch = t(() => { const m = new WebAssembly.Memory({ initial: 17 }); new Uint8Array(m.buffer).fill(1); });
  const instEmpty = t(() => new WebAssembly.Instance(empty, {}));
  const imports = t(() => WebAssembly.Module.imports(module));
  const exports = t(() => WebAssembly.Module.exports(module));
  const inst = new WebAssembly.Instance(module, { wasi_snapshot_preview1: new Proxy({}, { get: () => () => 52 }) });
  const buf = new Uint8Array(inst.exports.memory.buffer);
  const snap = buf.slice();
  const copy = t(() => new Uint8Array(inst.exports.memory.buffer).set(snap));
  const fill = t(() => new Uint8Array(inst.exports.memory.buffer).fill(0));
  let nz = 0; for (let p = 0; p < buf.length; p += 65536) { if (buf.subarray(p, p + 65536).some((x) => x)) nz++; }
  return `mem17 ${mem17} mem17touch ${mem17touch} instEmpty ${instEmpty} imports ${imports} exports ${exports} copy1.1MB ${copy} fill ${fill} nonzero-pages ${nz}`;
}
export function count_calls(module, args, stdin) {
  const s = shim(args, stdin);
  const counts = {};
  const wasi = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    const f = s.imports[imp.name];
    wasi[imp.name] = (...a) => { counts[imp.name] = (counts[imp.name] || 0) + 1; return f(...a); };
  }
  const instance = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi });
  s.setMemory(instance.exports.memory);
  try { instance.exports._start(); } catch (e) { if (!(e instanceof Exit)) throw e; }
  return JSON.stringify(counts);
}
