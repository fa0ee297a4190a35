// idlecore never hurts the page that embeds it: whatever is missing or
// blocked becomes a status event, never an exception in the page, and the
// page's main thread sees no long task.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCoordinator, staticServer, launch, open, lastStatus, waitFor, sleep, ROOT } from './harness.mjs';

let c;
let browser;
let site;

// Pages on a static server (origin http://localhost:P) with the package under
// /pkg/ too, so both same-origin and CDN-style tags can be tried.
const tag = (src, extra = '') => `<!doctype html><body><p>host</p>
  <script src="${src}" data-coordinator="COORD" data-cpu="1" data-consent="granted" ${extra} defer></script>`;

before(async () => {
  c = await startCoordinator();
  browser = await launch();
  const page = (html, csp) => ({ html: html.replace('COORD', c.ws), headers: csp ? { 'content-security-policy': csp } : {} });
  site = await staticServer(ROOT, {
    '/same-origin-csp': page(tag('/pkg/idlecore.js'),
      `default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self' ${c.base} ${c.ws}`),
    '/no-workers-csp': page(tag(`${c.base}/pkg/idlecore.js`), `script-src ${c.base}; worker-src 'none'`),
    '/no-wasm-csp': page(tag(`${c.base}/pkg/idlecore.js`), `script-src ${c.base}; worker-src blob: ${c.base}; connect-src ${c.base} ${c.ws}`),
    '/plain': page(tag('/pkg/idlecore.js')),
    '/unreachable': { html: tag('/pkg/idlecore.js').replace('COORD', 'ws://127.0.0.1:9/ws') },
  });
});
after(async () => {
  site?.close();
  await browser?.close();
  c?.stop();
});

async function visit(path, { init } = {}) {
  const context = await browser.newContext();
  if (init) await context.addInitScript(init);
  const { page, errors } = await open(context, site.origin + path);
  return { context, page, errors };
}

const stateIs = (page, want) =>
  waitFor(`state ${want}`, async () => {
    const s = await lastStatus(page);
    return s && s.state === want && s;
  }, 20_000, 50);

test('the same-origin CSP docs/embedding.md gives is enough', async () => {
  const { context, page, errors } = await visit('/same-origin-csp');
  try {
    await stateIs(page, 'connected');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('a CSP that forbids workers gives a failed status, not an exception', async () => {
  const { context, page, errors } = await visit('/no-workers-csp');
  try {
    const s = await stateIs(page, 'failed');
    assert.match(s.lastError, /agent Worker/);
    assert.ok((await page.evaluate(() => window.__idlecore.errors.length)) >= 1, 'an error event too');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('a CSP without wasm-unsafe-eval gives a failed status, not an exception', async () => {
  const { context, page, errors } = await visit('/no-wasm-csp');
  try {
    const s = await stateIs(page, 'failed');
    assert.match(s.lastError, /WebAssembly|Wasm|wasm/);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('a browser without WebAssembly or Workers gets an unsupported status', async () => {
  for (const [what, init] of [['WebAssembly', () => { delete globalThis.WebAssembly; }], ['Worker', () => { delete globalThis.Worker; }]]) {
    const { context, page, errors } = await visit('/plain', { init });
    try {
      const s = await stateIs(page, 'unsupported');
      assert.match(s.lastError, new RegExp(what === 'Worker' ? 'Web Workers' : 'WebAssembly'));
      assert.deepEqual(errors, [], what);
    } finally {
      await context.close();
    }
  }
});

test('an unreachable coordinator gives disconnected statuses and retries', async () => {
  const { context, page, errors } = await visit('/unreachable');
  try {
    const s = await stateIs(page, 'disconnected');
    assert.match(s.lastError, /closed|WebSocket/);
    await waitFor('a retry', async () =>
      (await page.evaluate(() => window.__idlecore.statuses.filter((s) => s.state === 'connecting').length)) >= 2, 20_000, 100);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('the page sees no long task while idlecore starts and computes', async () => {
  const init = () => {
    window.__longTasks = [];
    new PerformanceObserver((list) => window.__longTasks.push(...list.getEntries().map((e) => e.duration)))
      .observe({ type: 'longtask', buffered: true });
  };
  const { context, page, errors } = await visit('/plain', { init });
  try {
    await stateIs(page, 'connected');
    const hash = await c.api.upload('hashchain');
    const job = await c.api.job(hash, 60, ['--rounds', '100000']);
    await waitFor('tasks to run', async () => (await lastStatus(page)).tasksDone >= 20, 60_000, 100);
    await sleep(500);
    await c.api.cancel(job);
    const long = await page.evaluate(() => window.__longTasks);
    assert.deepEqual(long, [], 'main-thread tasks over 50 ms');
    // The observer does see one: the page's own 80 ms of work.
    await page.evaluate(() => setTimeout(() => { const t = performance.now(); while (performance.now() - t < 80); }));
    await waitFor('the control long task', async () => (await page.evaluate(() => window.__longTasks)).length === 1, 5_000, 50);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
