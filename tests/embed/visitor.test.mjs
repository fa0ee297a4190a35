// What a visitor sees and controls: consent before anything runs, the
// remembered choice, the indicator's Stop, pause when hidden, one agent per
// origin across tabs, and the handle's pause/resume/setCpu/stop.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCoordinator, launch, open, lastStatus, waitFor, sleep, browserCpuSeconds, ROOT, scratchDir } from './harness.mjs';

let c;
let browser;
let hash;

const PAGES = {
  'ask.html': '<script src="/pkg/idlecore.js" data-coordinator="/ws" data-cpu="1" defer></script>',
  'granted.html': '<script src="/pkg/idlecore.js" data-coordinator="/ws" data-cpu="1" data-consent="granted" defer></script>',
  'texts.html': '<script src="/pkg/idlecore.js" data-coordinator="/ws" data-banner-text="Lend us your CPU for science?" data-banner-allow="Sure" data-banner-decline="Not now" defer></script>',
};

before(async () => {
  const www = scratchDir('www');
  for (const [name, body] of Object.entries(PAGES)) writeFileSync(join(www, name), `<!doctype html><body><h1>host</h1>${body}`);
  copyFileSync(join(ROOT, 'www/index.html'), join(www, 'demo.html'));
  c = await startCoordinator({ www });
  browser = await launch();
  hash = await c.api.upload('hashchain');
});
after(async () => {
  await browser?.close();
  c?.stop();
});

const stats = () => c.api.stats();
const workersAre = (n) => waitFor(`${n} workers`, async () => (await stats()).workers === n, 20_000);
const state = async (page) => (await lastStatus(page))?.state;
const stateIs = (page, s, timeoutMs = 20_000) => waitFor(`state ${s}`, async () => (await state(page)) === s, timeoutMs, 20);

/** Runs `f` in a fresh browser context (its own storage), closed after; no worker is left joined. */
async function inContext(f) {
  const context = await browser.newContext();
  try {
    await f(context);
  } finally {
    await context.close();
    await workersAre(0);
  }
}

/** Two tabs of the same origin: the first runs the agent, the second waits. */
async function twoTabs(context) {
  const first = await open(context, `${c.base}/granted.html`);
  await stateIs(first.page, 'connected');
  const second = await open(context, `${c.base}/granted.html`);
  await stateIs(second.page, 'standby');
  return { first, second };
}

/** Resource URLs the page fetched so far. */
const fetched = (page) => page.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name));

test('nothing runs before consent; the choice is remembered; Stop stops and is remembered', async () => {
  const context = await browser.newContext();
  try {
    const { page, errors } = await open(context, `${c.base}/ask.html`);
    const banner = page.getByRole('dialog');
    await banner.waitFor();
    assert.match(await banner.textContent(), /idle processing power/);
    await stateIs(page, 'waiting-consent');
    await sleep(1500);
    assert.equal((await stats()).workers, 0, 'no connection before consent');
    const before = await fetched(page);
    assert.ok(!before.some((u) => /\.wasm|agent\.js|executor\.js/.test(u)), `nothing of the agent fetched: ${before}`);

    await page.getByRole('button', { name: 'Allow' }).click();
    await workersAre(1);
    await page.locator('[data-idlecore=indicator]').waitFor();

    // Remembered: the next page joins without asking.
    await page.reload();
    await stateIs(page, 'connected');
    assert.equal(await page.getByRole('dialog').count(), 0, 'no banner the second time');
    await workersAre(1);

    // One click on the indicator stops everything, and is remembered too.
    await page.getByRole('button', { name: 'Stop sharing CPU' }).click();
    await workersAre(0);
    assert.equal(await state(page), 'stopped');
    assert.equal(await page.locator('[data-idlecore=indicator]').count(), 0, 'the indicator goes away');
    await page.reload();
    await stateIs(page, 'declined');
    await sleep(1000);
    assert.equal((await stats()).workers, 0);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }

  const fresh = await browser.newContext();
  try {
    const { page } = await open(fresh, `${c.base}/ask.html`);
    await page.getByRole('button', { name: 'No thanks' }).click();
    await stateIs(page, 'declined');
    await page.reload();
    await stateIs(page, 'declined');
    assert.equal(await page.getByRole('dialog').count(), 0);
    assert.equal((await stats()).workers, 0);
  } finally {
    await fresh.close();
  }
});

/** Headless Chromium never hides a page, so the test makes the page report
 * `hidden` and sends the real `visibilitychange` event the browser would. */
const setVisibility = (page, v) =>
  page.evaluate((v) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => v });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => v === 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  }, v);

test('stop() while the banner is up removes it and nothing starts', () => inContext(async (context) => {
  const { page, errors } = await open(context, `${c.base}/ask.html`);
  await page.getByRole('dialog').waitFor();
  await page.evaluate(() => window.idlecore.stop());
  await stateIs(page, 'stopped');
  assert.equal(await page.getByRole('dialog').count(), 0, 'the banner is gone');
  await sleep(1000);
  assert.equal(await state(page), 'stopped');
  assert.equal((await stats()).workers, 0);
  assert.deepEqual(errors, []);
}));

test('the banner says what the site wants it to say', () => inContext(async (context) => {
  const { page } = await open(context, `${c.base}/texts.html`);
  const banner = page.getByRole('dialog');
  assert.equal((await banner.locator('p').textContent()).trim(), 'Lend us your CPU for science?');
  await page.getByRole('button', { name: 'Not now' }).waitFor();
  await page.getByRole('button', { name: 'Sure' }).click();
  await workersAre(1);
}));

test('a device on battery pauses and resumes when charging', async () => {
  const context = await browser.newContext();
  // A Battery Status API whose state the test changes (headless Chromium reports a desktop on AC).
  await context.addInitScript(() => {
    const battery = new EventTarget();
    battery.charging = false;
    window.__battery = battery;
    navigator.getBattery = () => Promise.resolve(battery);
  });
  try {
    const { page, errors } = await open(context, `${c.base}/granted.html`);
    await stateIs(page, 'paused');
    await sleep(1000);
    assert.equal((await stats()).slots, 0, 'nothing leased while on battery');
    await page.evaluate(() => {
      window.__battery.charging = true;
      window.__battery.dispatchEvent(new Event('chargingchange'));
    });
    await stateIs(page, 'connected');
    await waitFor('capacity', async () => (await stats()).slots >= 1, 5_000, 50);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await workersAre(0);
  }
});

test('a hidden page stops computing within a second and resumes when visible', () => inContext(async (context) => {
  const { page, errors } = await open(context, `${c.base}/granted.html`);
  await workersAre(1);
  // Tasks of about a second each, so one is always mid-run.
  const job = await c.api.job(hash, 40, ['--rounds', '500000']);
  await waitFor('a task to run', async () => (await lastStatus(page))?.running >= 1, 30_000, 20);
  await sleep(300);

  const hiddenAt = Date.now();
  await setVisibility(page, 'hidden');
  await waitFor('paused with no executor', async () => {
    const s = await lastStatus(page);
    return s.state === 'paused' && s.workers === 0 && s.running === 0;
  }, 5_000, 10);
  await waitFor('leases given back', async () => (await stats()).leases === 0, 5_000, 20);
  const took = Date.now() - hiddenAt;
  assert.ok(took < 1000, `paused and leases back after ${took} ms`);
  // And the CPU is really free from a second after hiding: the whole browser
  // uses almost nothing (a running task used a full core).
  await sleep(Math.max(0, hiddenAt + 1000 - Date.now()));
  const cpu0 = browserCpuSeconds(browser.pid);
  await sleep(2000);
  const used = (browserCpuSeconds(browser.pid) - cpu0) / 2;
  assert.ok(used < 0.1, `browser CPU while hidden: ${used.toFixed(3)} cores`);
  assert.equal((await stats()).workers, 1, 'the session stays open while paused');

  const doneBefore = (await c.api.status(job)).done;
  await setVisibility(page, 'visible');
  await stateIs(page, 'connected', 5_000);
  await waitFor('tasks to go on', async () => ((await c.api.status(job)).done) > doneBefore, 30_000, 100);
  await c.api.cancel(job);
  assert.deepEqual(errors, []);
}));

test('one agent per origin across tabs, handed over when its tab is hidden or closes', () => inContext(async (context) => {
  const { first, second } = await twoTabs(context);
  await sleep(1500);
  assert.equal((await stats()).workers, 1, 'the second tab waits');
  assert.equal(await state(second.page), 'standby');

  // The visitor switches to the second tab: the hidden first one hands the agent over.
  await setVisibility(first.page, 'hidden');
  await stateIs(second.page, 'connected');
  await stateIs(first.page, 'standby');
  await workersAre(1);
  // And back.
  await setVisibility(first.page, 'visible');
  await setVisibility(second.page, 'hidden');
  await stateIs(first.page, 'connected');
  await stateIs(second.page, 'standby');

  // The waiting tab is looked at again; it takes over when the first one closes.
  await setVisibility(second.page, 'visible');
  await first.page.close();
  await stateIs(second.page, 'connected');
  await workersAre(1);
  assert.deepEqual(first.errors, []);
  assert.deepEqual(second.errors, []);
}));

test('a tab opened while the holder is hidden gets the agent', () => inContext(async (context) => {
  const first = await open(context, `${c.base}/granted.html`);
  await stateIs(first.page, 'connected');
  await setVisibility(first.page, 'hidden');
  await stateIs(first.page, 'paused');
  const second = await open(context, `${c.base}/granted.html`);
  await stateIs(second.page, 'connected');
  await stateIs(first.page, 'standby');
  await workersAre(1);
}));

test('Stop in one tab stops the tabs waiting too', () => inContext(async (context) => {
  const { first, second } = await twoTabs(context);
  await first.page.getByRole('button', { name: 'Stop sharing CPU' }).click();
  await workersAre(0);
  await waitFor('the waiting tab to give up', async () => ['stopped', 'declined'].includes(await state(second.page)), 5_000, 50);
  await sleep(1500);
  assert.equal((await stats()).workers, 0, 'the waiting tab did not start');
  assert.equal(await second.page.locator('[data-idlecore=indicator]').count(), 0);
}));

test('the handle pauses, resumes, changes the CPU share and stops', () => inContext(async (context) => {
  const { page, errors } = await open(context, `${c.base}/granted.html`);
  await workersAre(1);
  const slots = async () => (await stats()).slots;
  const capacity = await slots();
  assert.ok(capacity >= 1);

  await page.evaluate(() => window.idlecore.pause());
  await stateIs(page, 'paused', 5_000);
  await waitFor('capacity 0 at the coordinator', async () => (await slots()) === 0, 5_000, 20);
  await page.evaluate(() => window.idlecore.resume());
  await stateIs(page, 'connected', 5_000);
  await waitFor('capacity back', async () => (await slots()) === capacity, 5_000, 20);

  await page.evaluate(() => window.idlecore.setCpu(0));
  await waitFor('no executors at cpu 0', async () => (await lastStatus(page)).workers === 0 && (await slots()) === 0, 5_000, 20);
  await page.evaluate(() => window.idlecore.setCpu(0.5));
  await waitFor('executors back', async () => (await lastStatus(page)).workers >= 1 && (await slots()) >= 1, 5_000, 20);
  await assert.rejects(page.evaluate(() => window.idlecore.setCpu(2)), /setCpu takes a number from 0 to 1/);

  await page.evaluate(() => window.idlecore.stop());
  await workersAre(0);
  assert.equal(await state(page), 'stopped');
  assert.deepEqual(errors, []);
}));

test('the demo page asks, shows live figures and follows its CPU slider', () => inContext(async (context) => {
  const { page, errors } = await open(context, `${c.base}/demo.html`);
  await page.getByRole('button', { name: 'Allow' }).click();
  await workersAre(1);
  await waitFor('the controls', async () => !(await page.locator('#controls').isDisabled()), 10_000, 50);
  const job = await c.api.job(hash, 8, ['--rounds', '20000']);
  await waitFor('tasks on the page', async () => Number(await page.textContent('#done')) >= 8, 60_000, 100);
  assert.match(await page.textContent('#bytes'), /^[1-9]\d* KB$/);
  await c.api.cancel(job).catch(() => {});

  await page.locator('#cpu').fill('0');
  await waitFor('no executors at 0%', async () => (await page.textContent('#workers')) === '0' && (await stats()).slots === 0, 5_000, 50);
  await page.locator('#cpu').fill('50');
  await waitFor('an executor at 50%', async () => (await page.textContent('#workers')) === '1', 5_000, 50);
  await page.getByRole('button', { name: 'Pause' }).click();
  await waitFor('paused', async () => (await page.textContent('#state')) === 'paused', 5_000, 50);
  assert.deepEqual(errors, []);
}));
