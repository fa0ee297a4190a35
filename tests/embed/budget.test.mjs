// The CPU budget as the operating system sees it: the CPU time of the whole
// headless browser over a window, against `cpu × cores` of wall time.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, launch, open, lastStatus, waitFor, sleep, browserCpuSeconds } from './harness.mjs';

let c;
let browser;

before(async () => {
  const www = mkdtempSync(join(tmpdir(), 'idlecore-www-'));
  writeFileSync(join(www, 'page.html'),
    '<!doctype html><body><script src="/pkg/idlecore.js" data-coordinator="/ws" data-cpu="0.1" data-consent="granted" defer></script>');
  c = await startCoordinator({ www });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  c?.stop();
});

test('the browser gives the CPU share it was set to, within 10%', async () => {
  const context = await browser.newContext();
  const { page, errors } = await open(context, `${c.base}/page.html`);
  await waitFor('the page to join', async () => (await c.api.stats()).workers === 1);
  const cores = await page.evaluate(() => navigator.hardwareConcurrency);
  // Tasks of about 100 ms, more than the test needs.
  const job = await c.api.job(await c.api.upload('hashchain'), 1500, ['--rounds', '250000']);
  const shares = cores > 1 ? [0.1, 0.25, (cores - 1) / cores] : [0.1, 0.25, 1];
  const measured = [];
  try {
    for (const cpu of shares) {
      await page.evaluate((cpu) => window.idlecore.setCpu(cpu), cpu);
      await waitFor('the new share to apply', async () => Math.abs((await lastStatus(page)).cpu - cpu) < 1e-9, 5_000, 20);
      await sleep(2000);
      const [cpu0, t0] = [browserCpuSeconds(browser.pid), performance.now()];
      await sleep(8000);
      const given = (browserCpuSeconds(browser.pid) - cpu0) / ((performance.now() - t0) / 1000) / cores;
      measured.push({ target: cpu, given: Number(given.toFixed(3)) });
    }
  } finally {
    await c.api.cancel(job);
    await context.close();
  }
  console.log(`cores ${cores}:`, JSON.stringify(measured));
  for (const { target, given } of measured) {
    assert.ok(Math.abs(given / target - 1) <= 0.1, `share ${target} of ${cores} cores: the browser used ${given}`);
  }
  assert.deepEqual(errors, []);
});
