// Shared pieces of the embed tests: a real coordinator process, a static
// server for pages on another origin, headless Chromium, and the job API.

import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, statSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, extname, resolve, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const TOKEN = 'embed-token';
const BIN = join(ROOT, 'target/release/idlecore');
const TASKS = join(ROOT, 'target/wasm32-wasip1/release');

const scratch = [];
process.on('exit', () => {
  for (const dir of scratch) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    } catch (e) {
      console.error(`could not remove ${dir}: ${e}`);
    }
  }
});

/** A new directory under the system's temp dir, removed when this test file's process exits. */
export function scratchDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), `idlecore-${prefix}-`));
  scratch.push(dir);
  return dir;
}

/** Starts `idlecore serve` on loopback (with `extraArgs`); resolves once it listens. */
export async function startCoordinator({ www = join(ROOT, 'www'), pkg = join(ROOT, 'pkg'), heartbeatMs = 1000, extraArgs = [] } = {}) {
  const data = scratchDir('embed');
  const child = spawn(BIN, ['serve', '--data', data, '--listen', '127.0.0.1:0', '--heartbeat-ms', String(heartbeatMs),
    '--token', TOKEN, '--www', www, '--pkg', pkg, '--no-validation', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IDLECORE_TOKEN: '' } });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const addr = await new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`coordinator did not start:\n${log}`)), 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/(\S+)/);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    child.on('exit', (code) => fail(new Error(`coordinator exited (${code}):\n${log}`)));
  });
  const base = `http://${addr}`;
  return {
    base,
    ws: `ws://${addr}/ws`,
    log: () => log,
    stop: () => child.kill('SIGKILL'),
    api: api(base),
  };
}

function api(base) {
  const call = async (method, path, body) => {
    const headers = { authorization: `Bearer ${TOKEN}` };
    if (body && !(body instanceof Uint8Array)) headers['content-type'] = 'application/json';
    const res = await fetch(base + path, { method, headers, body: body instanceof Uint8Array ? body : body && JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text);
  };
  return {
    stats: () => call('GET', '/api/stats'),
    status: (job) => call('GET', `/api/jobs/${job}`),
    results: (job) => call('GET', `/api/jobs/${job}/results`),
    cancel: (job) => call('POST', `/api/jobs/${job}/cancel`),
    /** Uploads a task module built by the xtask; returns its hash. */
    upload: async (name) => (await call('POST', '/api/modules', new Uint8Array(readFileSync(join(TASKS, `${name}.wasm`))))).hash,
    uploadBytes: async (bytes) => (await call('POST', '/api/modules', bytes)).hash,
    /** Uploads a task input; returns its hash. */
    uploadBlob: async (bytes) => (await call('POST', '/api/blobs', bytes)).hash,
    /** A job from a whole request body (see docs/protocol.md); returns its id. */
    createJob: async (body) => (await call('POST', '/api/jobs', body)).id,
    /** A job of `n` tasks whose stdins are "0", "1", ...; `more` adds request fields (`validation`). */
    job: async (hash, n, args = [], limits = {}, more = {}) =>
      (await call('POST', '/api/jobs', { module: hash, limits, tasks: Array.from({ length: n }, (_, i) => ({ stdin: btoa(String(i)), args })), ...more })).id,
  };
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.css': 'text/css' };

/**
 * Serves `dir` on http://localhost:PORT (another origin than the coordinator's
 * 127.0.0.1). `pages` maps a path to HTML (with optional headers) served as is.
 */
export async function staticServer(dir, pages = {}) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const page = pages[path];
    if (page) {
      const { html, headers = {} } = typeof page === 'string' ? { html: page } : page;
      res.writeHead(200, { 'content-type': 'text/html', ...headers });
      return res.end(html);
    }
    const file = normalize(join(dir, path.endsWith('/') ? `${path}index.html` : path));
    try {
      if (!file.startsWith(dir) || !statSync(file).isFile()) throw new Error('not a file');
      res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream' });
      res.end(readFileSync(file));
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return { origin: `http://localhost:${server.address().port}`, close: () => server.close() };
}

/** Headless Chromium (with extra command-line `args`); `browser.pid` is its main process (for CPU accounting). */
export async function launch({ args = [] } = {}) {
  const server = await chromium.launchServer({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-quic', ...args],
  });
  const browser = await chromium.connect(server.wsEndpoint());
  browser.pid = server.process().pid;
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close();
    await server.close();
  };
  return browser;
}

/** Opens `url` in a new page, recording uncaught page errors and idlecore's events. */
export async function open(context, url) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.addInitScript(() => {
    window.__idlecore = { statuses: [], errors: [] };
    addEventListener('idlecore:status', (e) => window.__idlecore.statuses.push(e.detail));
    addEventListener('idlecore:error', (e) => window.__idlecore.errors.push(e.detail));
  });
  await page.goto(url);
  return { page, errors };
}

/** The last status the page's script tag reported. */
export async function lastStatus(page) {
  return page.evaluate(() => window.__idlecore.statuses.at(-1) || null);
}

export async function waitFor(what, f, timeoutMs = 60_000, everyMs = 100) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await f();
    if (last) return last;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits for a job to complete; returns its results. */
export async function finish(coordinator, job, timeoutMs = 120_000) {
  await waitFor(`job ${job} to complete`, async () => (await coordinator.api.status(job)).state === 'completed', timeoutMs, 250);
  return coordinator.api.results(job);
}

/** CPU time (s) used so far by the processes of a browser (the launched one and its children). */
export function browserCpuSeconds(rootPid) {
  const ticks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());
  const stats = new Map();
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      stats.set(Number(pid), { ppid: Number(fields[1]), cpu: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // the process ended meanwhile
    }
  }
  const tree = new Set([rootPid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, s] of stats) {
      if (!tree.has(pid) && tree.has(s.ppid)) {
        tree.add(pid);
        grew = true;
      }
    }
  }
  let total = 0;
  for (const pid of tree) total += stats.get(pid)?.cpu || 0;
  return total / ticks;
}

/// The whole machine's CPU time so far from /proc/stat, in seconds: `busy`
/// (every state but idle, iowait and steal) and `steal` (time the hypervisor
/// gave this machine's CPUs to others).
export function machineCpuSeconds() {
  const ticks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '));
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  return { busy: (user + nice + system + irq + softirq) / ticks, steal: (steal || 0) / ticks };
}
