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

// Instantiates `module` against the shim, runs `_start`, returns stdout.
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
  const out = new Uint8Array(s.out.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of s.out) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

