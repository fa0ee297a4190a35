// The package as site owners and developers get it: the script tag from
// another origin (a CDN) under the documented CSP, the packed npm tarball
// imported with no bundler and built into a Vite app, and its types.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCoordinator, staticServer, launch, open, waitFor, finish, ROOT, scratchDir } from './harness.mjs';

const HERE = fileURLToPath(new URL('.', import.meta.url));
let c;
let browser;
let hash;

before(async () => {
  c = await startCoordinator();
  browser = await launch();
  hash = await c.api.upload('hashchain');
});
after(async () => {
  await browser?.close();
  c?.stop();
});

/** Runs a small job on whatever page has joined; checks every task's digest. */
async function computes(n = 6) {
  await waitFor('a worker to join', async () => (await c.api.stats()).workers >= 1, 30_000);
  const job = await c.api.job(hash, n, ['--rounds', '1000']);
  const results = await finish(c, job);
  assert.equal(results.length, n);
  for (const r of results) {
    assert.equal(r.status, 'done', JSON.stringify(r));
    const want = execFileSync(join(ROOT, 'target/release/hashchain'), ['--rounds', '1000'], { input: String(r.task) });
    assert.equal(Buffer.from(r.stdout, 'base64').toString(), want.toString(), `task ${r.task}'s digest`);
  }
}

async function leaves(context) {
  await context.close();
  await waitFor('the worker to leave', async () => (await c.api.stats()).workers === 0, 20_000);
}

test('the script tag works from another origin under the CSP docs/embedding.md gives', async () => {
  // Chromium checks a module Worker's imports against worker-src, so the CDN is there too.
  const csp = `default-src 'self'; script-src ${c.base} 'wasm-unsafe-eval'; worker-src blob: ${c.base}; connect-src ${c.base} ${c.ws}`;
  const page = `<!doctype html><body><p>host page</p>
    <script src="${c.base}/pkg/idlecore.js" data-coordinator="${c.ws}" data-site-key="embed-test"
      data-cpu="1" data-consent="granted" defer></script>`;
  const site = await staticServer(HERE, { '/': { html: page, headers: { 'content-security-policy': csp } } });
  const context = await browser.newContext();
  try {
    const violations = [];
    const { page: p, errors } = await open(context, `${site.origin}/`);
    p.on('console', (m) => { if (/Content.Security.Policy|Refused/i.test(m.text())) violations.push(m.text()); });
    assert.notEqual(new URL(c.base).origin, site.origin, 'the script comes from another origin');
    await computes();
    assert.deepEqual(errors, [], 'no exception reached the page');
    assert.deepEqual(violations, [], 'nothing was blocked by the CSP');
    assert.match(c.log(), /site="?embed-test/, 'the site key reached the coordinator');
  } finally {
    await leaves(context);
    site.close();
  }
});

test('the packed package imports with no bundler (import map) and reports stats', async () => {
  const page = `<!doctype html><body>
    <script type="importmap">{"imports": {"idlecore": "/node_modules/idlecore/index.js"}}</script>
    <script type="module">
      import { start } from 'idlecore';
      window.handle = start({ coordinator: ${JSON.stringify(c.ws)}, consent: 'granted', cpu: 1 });
    </script>`;
  const site = await staticServer(HERE, { '/': page });
  const context = await browser.newContext();
  try {
    const { page: p, errors } = await open(context, `${site.origin}/`);
    await computes();
    const stats = await waitFor('stats to count the tasks', async () => {
      const s = await p.evaluate(() => window.handle.stats());
      return s.tasksDone >= 6 && s;
    });
    assert.ok(stats.cpuSeconds > 0, `CPU-seconds given: ${stats.cpuSeconds}`);
    const moduleBytes = readFileSync(join(HERE, '../../target/wasm32-wasip1/release/hashchain.wasm')).length;
    assert.ok(stats.bytesIn > moduleBytes / 2, `bytes in (${stats.bytesIn}) include the module download`);
    assert.ok(stats.bytesOut > 0 && stats.bytesMoved === stats.bytesIn + stats.bytesOut);
    // Invalid options are a TypeError at the call, naming the option.
    const thrown = await p.evaluate(async () => {
      const { start } = await import('idlecore');
      const tries = [{ coordinator: 'wss://x/ws', cpu: 2 }, { coordinator: 'wss://x/ws', slots: 2 }, { cpu: 0.5 },
        { coordinator: 'ftp://x/ws' }, { coordinator: 'wss://x/ws', consent: 'yes' }];
      return tries.map((o) => { try { start(o); return 'no error'; } catch (e) { return `${e.name}: ${e.message}`; } });
    });
    assert.match(thrown[0], /^TypeError: .*`cpu` must be a number from 0 to 1/);
    assert.match(thrown[1], /^TypeError: .*unknown option `slots`/);
    assert.match(thrown[2], /^TypeError: .*`coordinator` is required/);
    assert.match(thrown[3], /^TypeError: .*`coordinator` must be a ws/);
    assert.match(thrown[4], /^TypeError: .*`consent` must be "ask" or "granted"/);
    assert.deepEqual(errors, []);
  } finally {
    await leaves(context);
    site.close();
  }
});

/** Serves a built app (`dir`, with `index.html`) and runs a job on it. */
async function appComputes(dir) {
  const site = await staticServer(dir);
  const context = await browser.newContext();
  try {
    const { page, errors } = await open(context, `${site.origin}/?coordinator=${encodeURIComponent(c.ws)}`);
    await computes();
    assert.equal(await page.textContent('#state'), 'connected');
    assert.deepEqual(errors, []);
  } finally {
    await leaves(context);
    site.close();
  }
}

test('a Vite app built against the packed package computes', async () => {
  const out = scratchDir('vite');
  execFileSync(process.execPath, [join(HERE, 'node_modules/vite/bin/vite.js'), 'build', '--outDir', out, '--emptyOutDir'],
    { cwd: join(HERE, 'app'), stdio: 'inherit' });
  await appComputes(out);
});

test('a webpack app built against the packed package computes', async () => {
  const out = scratchDir('webpack');
  execFileSync(process.execPath, [join(HERE, 'node_modules/webpack-cli/bin/cli.js'), '--config', join(HERE, 'app/webpack.config.cjs'),
    '--env', `out=${out}`, '--no-stats'], { stdio: 'inherit' });
  // webpack builds scripts only; the app's page loads its bundle under the same name.
  writeFileSync(join(out, 'index.html'), readFileSync(join(HERE, 'app/index.html')));
  await appComputes(out);
});

test('the packed package holds every file its code refers to', () => {
  const dir = join(HERE, 'node_modules/idlecore');
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  assert.equal(manifest.name, 'idlecore');
  assert.match(manifest.version, /^\d+\.\d+\.\d+/);
  assert.equal(manifest.types, 'index.d.ts');
  assert.equal(manifest.exports['.'].default, './index.js');
  const seen = new Set();
  const visit = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    assert.ok(existsSync(join(dir, file)), `${file} is in the package`);
    if (!file.endsWith('.js')) return;
    const code = readFileSync(join(dir, file), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
    // Static imports, and files named next to import.meta.url (workers, wasm).
    const refs = [...code.matchAll(/(?:import|export)[^'"]*?from\s*['"](\.[^'"]+)['"]/g),
      ...code.matchAll(/import\s*['"](\.[^'"]+)['"]/g),
      ...code.matchAll(/new URL\(\s*['"]([^'"]+)['"]\s*,\s*import\.meta\.url/g),
      // A script name held in a constant (before minifying inlines it).
      ...code.matchAll(/=\s*['"]([a-z_]+\.js)['"]/g)].map((m) => m[1]);
    for (const ref of refs) visit(normalize(join(dirname(file), ref)));
  };
  for (const entry of ['index.js', 'idlecore.js', 'index.d.ts']) visit(entry);
  for (const must of ['agent.js', 'executor.js', 'spawn.js', 'consent.js', 'lock.js', 'pause.js', 'messages.js', 'peers.js', 'idlecore_wasm_bg.wasm']) {
    assert.ok(seen.has(must), `${must} is reachable from the entry points`);
  }
  assert.ok([...seen].some((f) => f.startsWith('snippets/')), 'wasm-bindgen snippets are shipped');
});

test('minified scripts keep the cross-origin spawn hidden from bundlers', () => {
  // A script name in a variable, behind webpackIgnore: bundlers must not take it for an asset.
  const dir = join(HERE, 'node_modules/idlecore');
  for (const file of ['agent.js', 'index.js']) {
    const code = readFileSync(join(dir, file), 'utf8');
    assert.match(code, /new URL\(\/\* webpackIgnore: true \*\/\s*[A-Za-z_$][\w$]*\s*,\s*import\.meta\.url\)/, file);
  }
});

test('script and wasm together are at most 150 KiB gzipped', () => {
  const dir = join(HERE, 'node_modules/idlecore');
  const files = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (/\.(js|wasm)$/.test(e.name)) files.push(join(d, e.name));
    }
  };
  walk(dir);
  const total = files.reduce((n, f) => n + gzipSync(readFileSync(f), { level: 9 }).length, 0);
  console.log(`shipped, gzipped: ${(total / 1024).toFixed(1)} KiB in ${files.length} files`);
  assert.ok(total <= 150 * 1024, `${(total / 1024).toFixed(1)} KiB gzipped`);
});

test('the package types accept the documented API and reject misuse', () => {
  execFileSync(process.execPath, [join(HERE, 'node_modules/typescript/bin/tsc'), '-p', join(HERE, 'types-check')], { stdio: 'inherit' });
});
