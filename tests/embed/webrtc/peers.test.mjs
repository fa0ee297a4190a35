// Peer transfers in headless Chromium: a visitor fetches a task module from
// another visitor over a WebRTC data channel, and when the holder vanishes
// mid-transfer the asker fetches the module from the coordinator instead.
//
// Run by `cargo xtask test --only webrtc` inside a network namespace of its
// own: Chromium gathers no loopback candidates, so the peers meet on the
// namespace's veth address (no traffic leaves the machine).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, launch, open, lastStatus, waitFor, finish, ROOT } from '../harness.mjs';

// One executor and no prefetched leases: a visitor holds one lease at a time,
// so the other visitor gets leases too.
const PAGE = '<!doctype html><body><script src="/pkg/idlecore.js" data-coordinator="/ws" data-cpu="1" '
  + 'data-consent="granted" data-max-workers="1" data-prefetch="0" defer></script>';
const ROUNDS = ['--rounds', '20000'];

let c;
let browser;

before(async () => {
  const www = mkdtempSync(join(tmpdir(), 'idlecore-www-'));
  writeFileSync(join(www, 'peer.html'), PAGE);
  c = await startCoordinator({ www });
  // Host candidates as plain addresses (not mDNS names, which nothing resolves here).
  browser = await launch({ args: ['--disable-features=WebRtcHideLocalIpsWithMdns'] });
});
after(async () => {
  await browser?.close();
  c?.stop();
});

const stats = () => c.api.stats();

/** A visitor in a browser context of its own (own storage, own agent), once connected. */
async function visitor(initScript) {
  const context = await browser.newContext();
  if (initScript) await context.addInitScript(initScript);
  const { page, errors } = await open(context, `${c.base}/peer.html`);
  await waitFor('the visitor to connect', async () => (await lastStatus(page))?.state === 'connected', 30_000);
  return { context, page, errors };
}

function leb128(n) {
  const out = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n) byte += 128;
    out.push(byte);
  } while (n);
  return Buffer.from(out);
}

/** The hashchain task with `padding` bytes more in a custom section: same code, a hash of its own. */
function paddedModule(padding, fill) {
  const base = readFileSync(join(ROOT, 'target/wasm32-wasip1/release/hashchain.wasm'));
  const name = Buffer.from('idlecore-test-padding');
  const body = Buffer.concat([leb128(name.length), name, Buffer.alloc(padding, fill)]);
  return new Uint8Array(Buffer.concat([base, Buffer.from([0]), leb128(body.length), body]));
}

/** Runs `n` tasks of `hash` and checks every digest against the native build. */
async function computes(hash, n) {
  const results = await finish(c, await c.api.job(hash, n, ROUNDS), 180_000);
  assert.equal(results.length, n);
  for (const r of results) {
    assert.equal(r.status, 'done', JSON.stringify(r));
    const want = execFileSync(join(ROOT, 'target/release/hashchain'), ROUNDS, { input: String(r.task) });
    assert.equal(Buffer.from(r.stdout, 'base64').toString(), want.toString(), `task ${r.task}'s digest`);
  }
}

const statusWhere = (v, what, f) => waitFor(what, async () => {
  const s = await lastStatus(v.page);
  return s && f(s) ? s : null;
}, 30_000);

test('a visitor fetches a module from another visitor over a data channel', async () => {
  const module = paddedModule(3 << 20, 1);
  const hash = await c.api.uploadBytes(module);
  const before = (await stats()).peers;

  const holder = await visitor();
  // The only visitor: no peer holds the module, so it comes from the coordinator.
  await computes(hash, 2);
  let s = await statusWhere(holder, 'the holder to count its module', (st) => st.tasksDone >= 1);
  assert.equal(s.modulesFromPeers, 0);

  const asker = await visitor();
  await computes(hash, 12);
  s = await statusWhere(asker, 'the asker to count its module', (st) => st.modulesFromPeers === 1);
  assert.ok(s.tasksDone >= 1, 'the asker ran tasks');
  assert.equal(s.bytesFromPeers, module.length, 'the whole module came over the data channel');
  assert.equal(s.peerFallbacks, 0, s.lastError);
  s = await statusWhere(holder, 'the holder to count what it sent', (st) => st.bytesToPeers > 0);
  assert.equal(s.bytesToPeers, module.length);

  const after = (await stats()).peers;
  assert.equal(after.peer_fetches - before.peer_fetches, 1, 'the coordinator counts the fetch');
  assert.equal(after.peer_bytes - before.peer_bytes, module.length, 'and the egress it saved');
  assert.ok(after.introductions > before.introductions);
  assert.deepEqual([...holder.errors, ...asker.errors], []);
  await holder.context.close();
  await asker.context.close();
});

test('a holder that vanishes mid-transfer leaves the asker to fetch from the coordinator', async () => {
  const module = paddedModule(4 << 20, 2);
  const hash = await c.api.uploadBytes(module);
  const before = (await stats()).peers;
  const HOLD_AFTER = 512 * 1024;
  // The holder's page stops passing data on after the first 512 KiB (and is
  // closed then), so the transfer is surely cut in the middle.
  const holder = await visitor(`{
    window.__sentToPeers = 0;
    const send = RTCDataChannel.prototype.send;
    RTCDataChannel.prototype.send = function (data) {
      if (window.__sentToPeers >= ${HOLD_AFTER}) return;
      window.__sentToPeers += data.byteLength;
      send.call(this, data);
    };
  }`);
  await computes(hash, 2);

  const asker = await visitor();
  const job = c.api.job(hash, 8, ROUNDS);
  await waitFor('the holder to be mid-transfer', () => holder.page.evaluate(() => window.__sentToPeers >= 512 * 1024), 60_000, 20);
  await holder.context.close();
  const results = await finish(c, await job, 180_000);
  assert.equal(results.length, 8);
  for (const r of results) {
    const want = execFileSync(join(ROOT, 'target/release/hashchain'), ROUNDS, { input: String(r.task) });
    assert.equal(Buffer.from(r.stdout, 'base64').toString(), want.toString(), `task ${r.task}'s digest`);
  }
  const s = await statusWhere(asker, 'the asker to count its fallback', (st) => st.peerFallbacks >= 1 && st.tasksDone >= 1);
  assert.equal(s.modulesFromPeers, 0);
  assert.equal(s.bytesFromPeers, 0, 'a cut transfer counts nothing');
  assert.match(s.lastError || '', /from a peer/);
  assert.equal((await stats()).peers.peer_fetches, before.peer_fetches, 'no peer fetch is counted');
  assert.deepEqual(asker.errors, []);
  await asker.context.close();
});
