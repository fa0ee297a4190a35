// The job owner's dashboard (www/dashboard.html): the pool's figures, and per
// job its progress and what validating its results cost and found.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCoordinator, launch, finish, waitFor, TOKEN } from './harness.mjs';

let c;
let browser;

before(async () => {
  c = await startCoordinator();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  c?.stop();
});

/** The dashboard's cells for one job, once it shows the job as completed. */
async function row(page, job) {
  return waitFor(`job ${job} on the dashboard`, async () => {
    const cells = await page.$$eval(`tr[data-job="${job}"] td`, (tds) => tds.map((td) => td.textContent));
    return cells[1] === 'completed' && cells;
  }, 20_000, 200);
}

test('the dashboard shows each job with its validation figures', async () => {
  const hash = await c.api.upload('hashchain');
  const validation = { replicas: 2, max_replicas: 3, trust_threshold: 10, spot_checks: 0 };
  const checked = await c.api.job(hash, 4, [], {}, { validation });
  const unchecked = await c.api.job(hash, 1);
  // Two visitors: each task of the checked job needs two distinct workers.
  const visitors = [await browser.newContext(), await browser.newContext()];
  for (const v of visitors) await (await v.newPage()).goto(`${c.base}/visitor.html`);
  await finish(c, checked);
  await finish(c, unchecked);
  for (const v of visitors) await v.close();

  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${c.base}/dashboard.html`);
  await page.fill('#token', 'not-the-token');
  await page.click('#login button');
  await waitFor('the refusal', async () => (await page.textContent('#error')).includes('refused'), 10_000);
  assert.equal(await page.isHidden('#jobs'), true);

  await page.fill('#token', TOKEN);
  await page.click('#login button');
  const [id, , done, failed, , policy, compute, disagreements, spots, again, banned] = await row(page, checked);
  assert.deepEqual([id, done, failed, policy], [String(checked), '4 / 4', '0', '2 replicas, spot 0%']);
  // Two runs per task, no more: two honest workers agree at once.
  assert.deepEqual([compute, disagreements, spots, again, banned], ['2.00x', '0', '0 (0)', '0', '0']);
  const plain = await row(page, unchecked);
  assert.deepEqual([plain[2], plain[5], plain[6]], ['1 / 1', 'off', '1.00x']);
  assert.equal(await page.textContent('[data-stat="banned"]'), '0');
  await context.close();
});
