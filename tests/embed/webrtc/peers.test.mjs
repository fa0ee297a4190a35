// Peer transfers in headless Chromium: a visitor fetches a task module or a
// large task input from another visitor over a WebRTC data channel (moved to
// the agent Worker, or relayed by the page), and when the holder vanishes or
// stalls mid-transfer the asker fetches the module from the coordinator instead.
//
// Run by `cargo xtask test --only webrtc` inside a network namespace of its
// own: Chromium gathers no loopback candidates, so the peers meet on the
// namespace's veth address (no traffic leaves the machine).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCoordinator, launch, open, lastStatus, waitFor, finish, ROOT, scratchDir } from '../harness.mjs';
import { NO_CHANNEL_TRANSFER } from './common.mjs';

// One executor and no prefetched leases: a visitor holds one lease at a time,
// so the other visitor gets leases too.
const PAGE = '<!doctype html><body><script src="/pkg/idlecore.js" data-coordinator="/ws" data-cpu="1" '
  + 'data-consent="granted" data-max-workers="1" data-prefetch="0" defer></script>';
const ROUNDS = ['--rounds', '20000'];

let c;
let browser;

before(async () => {
  const www = scratchDir('www');
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

// Every visitor leaves after its test, passed or not, so none serves or computes in the next one.
const contexts = [];
afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  await waitFor('the visitors to leave', async () => (await stats()).workers === 0, 20_000);
});

/** A visitor in a browser context of its own (own storage, own agent), once connected. */
async function visitor(initScript) {
  const context = await browser.newContext();
  contexts.push(context);
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

/** Waits for a status of `v` for which `f` holds; a timeout shows the last one. */
async function statusWhere(v, what, f) {
  let last = null;
  try {
    return await waitFor(what, async () => {
      last = await lastStatus(v.page);
      return last && f(last) ? last : null;
    }, 30_000);
  } catch (e) {
    throw new Error(`${e.message}; last status: ${JSON.stringify(last)}`);
  }
}

// Counts the bytes the page itself sends on data channels (a channel moved
// to the agent Worker sends from there, unseen here); past `window.__cutAt`
// bytes the page sends nothing more, as if the holder had stalled.
const COUNT_PAGE_SENDS = `{
  window.__sentToPeers = 0;
  const send = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (data) {
    if (window.__sentToPeers >= (window.__cutAt ?? Infinity)) return;
    window.__sentToPeers += data.byteLength;
    send.call(this, data);
  };
}`;
const sentByPage = (v) => v.page.evaluate(() => window.__sentToPeers);

/** Can this browser move an RTCDataChannel to another context? */
const canMoveChannels = (v) => v.page.evaluate(() => {
  const pc = new RTCPeerConnection();
  try {
    const dc = pc.createDataChannel('probe');
    new MessageChannel().port1.postMessage(dc, [dc]);
    return true;
  } catch {
    return false;
  } finally {
    pc.close();
  }
});

/**
 * A holder downloads the module from the coordinator (no peer has it), then an
 * asker gets it from the holder over a data channel. Returns the two visitors
 * and the module's size as served.
 */
async function exchange(padding, fill, script) {
  const module = paddedModule(padding, fill);
  const hash = await c.api.uploadBytes(module);
  const before = (await stats()).peers;

  const holder = await visitor(script);
  await computes(hash, 2);
  let s = await statusWhere(holder, 'the holder to count its module', (st) => st.tasksDone >= 1);
  assert.equal(s.modulesFromPeers, 0);

  const asker = await visitor(script);
  await computes(hash, 12);
  // Counted once compiled (after the SHA-256 check). The asker may not get to run a task with it: a
  // task waiting for its module long enough is speculatively given to an idle worker too.
  s = await statusWhere(asker, 'the asker to load the module from the peer', (st) => st.modulesFromPeers === 1);
  // The module as served (prepared for sandboxing by the coordinator: a little larger).
  const served = s.bytesFromPeers;
  assert.ok(served >= module.length, `${served} bytes came over the data channel`);
  assert.equal(s.peerFallbacks, 0, s.lastError);
  s = await statusWhere(holder, 'the holder to count what it sent', (st) => st.bytesToPeers > 0);
  assert.equal(s.bytesToPeers, served);

  const after = (await stats()).peers;
  assert.equal(after.peer_fetches - before.peer_fetches, 1, 'the coordinator counts the fetch');
  assert.equal(after.peer_bytes - before.peer_bytes, served, 'and the egress it saved');
  assert.ok(after.introductions > before.introductions);
  assert.deepEqual([...holder.errors, ...asker.errors], []);
  return { holder, asker, served };
}

const CHUNK = 16 * 1024 - 1;
/** Bytes on the channel for a blob of `size`: header, then chunks with a type byte each. */
const onTheWire = (size) => 9 + size + Math.ceil(size / CHUNK);

test('a visitor fetches a module from another visitor over a data channel', async () => {
  const { holder, served } = await exchange(3 << 20, 1, COUNT_PAGE_SENDS);
  assert.ok(served > 0);
  // This Chromium moves channels to Workers: the agent Worker sends itself and the page relays nothing
  // (the next test covers browsers that cannot).
  assert.ok(await canMoveChannels(holder), 'Chromium can transfer an RTCDataChannel');
  assert.equal(await sentByPage(holder), 0);
});

test('where a data channel cannot be moved to the agent, the page relays it', async () => {
  const { holder, asker, served } = await exchange(1 << 20, 3, COUNT_PAGE_SENDS + NO_CHANNEL_TRANSFER);
  assert.equal(await sentByPage(holder), onTheWire(served), 'every chunk went through the holder page');
  assert.equal(await sentByPage(asker), 33, 'the asker page relayed the request');
});

/**
 * A holder runs tasks whose stdin is a 2 MiB blob; an asker fetches the
 * input from the holder: having the module already, or (`fresh`) the module
 * too, over a second connection once the first is done. Returns the holder,
 * and the bytes of module the asker got from peers before.
 */
async function inputExchange(script, fresh = false) {
  const hash = await c.api.upload('hashchain');
  // 2 MiB of stdin, the same for every task: uploaded once, fetched by hash.
  const input = new Uint8Array(2 << 20).map((_, i) => 48 + (i % 10));
  const blob = await c.api.uploadBlob(input);
  const want = execFileSync(join(ROOT, 'target/release/hashchain'), ROUNDS, { input }).toString();
  const run = async (n) => {
    const tasks = Array.from({ length: n }, () => ({ stdin_blob: blob, args: ROUNDS }));
    const results = await finish(c, await c.api.createJob({ module: hash, tasks }), 180_000);
    assert.equal(results.length, n);
    for (const r of results) assert.equal(Buffer.from(r.stdout, 'base64').toString(), want, JSON.stringify(r));
  };
  const holder = await visitor(script);
  await run(2);
  await statusWhere(holder, 'the holder to download the input', (st) => st.bytesIn >= input.length);

  const asker = await visitor(script);
  const before = (await stats()).peers;
  if (!fresh) await computes(hash, 4);
  await run(12);
  // The module (which is smaller) may have come from the peer too: while the asker ran the first tasks.
  const s = await statusWhere(asker, 'the asker to fetch the input from the peer',
    (st) => st.bytesFromPeers >= input.length && (!fresh || st.modulesFromPeers === 1));
  assert.equal(s.peerFallbacks, 0, s.lastError);
  assert.ok(s.bytesIn < input.length, `the asker downloaded only ${s.bytesIn} bytes from the coordinator`);
  const fetches = 1 + s.modulesFromPeers;
  const after = await waitFor('the coordinator to count the fetches', async () => {
    const p = (await stats()).peers;
    return p.peer_fetches - before.peer_fetches >= fetches ? p : null;
  }, 10_000);
  assert.equal(after.peer_fetches - before.peer_fetches, fetches, 'the coordinator counts the fetches');
  assert.equal(after.peer_bytes - before.peer_bytes, s.bytesFromPeers, 'and the egress they saved');
  assert.deepEqual([...holder.errors, ...asker.errors], []);
  return { holder, moduleBytes: s.bytesFromPeers - input.length, size: input.length, fromPeers: s.bytesFromPeers };
}

test('a visitor fetches a large task input from another visitor', async () => {
  const { holder } = await inputExchange(COUNT_PAGE_SENDS);
  // Served from the agent Worker, which holds the channel; the holder sends the moment the request is in.
  assert.equal(await sentByPage(holder), 0);
});

test('a new visitor fetches both the module and the input from the one visitor holding them', async () => {
  const { fromPeers, size } = await inputExchange(COUNT_PAGE_SENDS, true);
  assert.ok(fromPeers > size, `${fromPeers} bytes from the peer: the input and the module`);
});

test('a large task input over a channel the page relays', async () => {
  const { holder, moduleBytes, size } = await inputExchange(COUNT_PAGE_SENDS + NO_CHANNEL_TRANSFER);
  assert.equal(await sentByPage(holder), onTheWire(size) + (moduleBytes ? onTheWire(moduleBytes) : 0));
});

/**
 * A holder whose page stops relaying after 512 KiB; `leave` closes it then.
 * The asker must fetch the module from the coordinator; returns its last error.
 */
async function cutTransfer(fill, leave) {
  const module = paddedModule(4 << 20, fill);
  const hash = await c.api.uploadBytes(module);
  const before = (await stats()).peers;
  const holder = await visitor(COUNT_PAGE_SENDS + NO_CHANNEL_TRANSFER);
  await holder.page.evaluate(() => { window.__cutAt = 512 * 1024; });
  await computes(hash, 2);

  const asker = await visitor();
  const job = c.api.job(hash, 8, ROUNDS);
  await waitFor('the holder to be mid-transfer', async () => (await sentByPage(holder)) >= 512 * 1024, 60_000, 20);
  const cut = Date.now();
  if (leave) await holder.context.close();
  const fellBack = statusWhere(asker, 'the asker to give the peer up', (st) => st.peerFallbacks >= 1).then(() => Date.now() - cut);
  const results = await finish(c, await job, 180_000);
  assert.equal(results.length, 8);
  for (const r of results) {
    const want = execFileSync(join(ROOT, 'target/release/hashchain'), ROUNDS, { input: String(r.task) });
    assert.equal(Buffer.from(r.stdout, 'base64').toString(), want.toString(), `task ${r.task}'s digest`);
  }
  // The module came from the coordinator after all. A holder that stays may
  // have run the asker's tasks meanwhile; one that left did not.
  const waited = await fellBack;
  const s = await statusWhere(asker, 'the asker to fetch from the coordinator', (st) => st.peerFallbacks >= 1
    && st.bytesIn >= module.length && (!leave || st.tasksDone >= 1));
  assert.equal(s.modulesFromPeers, 0);
  assert.equal(s.bytesFromPeers, 0, 'a cut transfer counts nothing');
  assert.equal((await stats()).peers.peer_fetches, before.peer_fetches, 'no peer fetch is counted');
  assert.deepEqual(asker.errors, []);
  return { why: s.lastError || '', waited };
}

test('a holder that vanishes mid-transfer leaves the asker to fetch from the coordinator', async () => {
  const { why, waited } = await cutTransfer(2, true);
  assert.match(why, /from a peer: (the data channel closed|the peer closed the connection)/);
  assert.ok(waited < 4000, `given up ${waited} ms after the holder left, before any stall timer`);
});

test('a holder that stalls mid-transfer is given up after 5 s of no progress', async () => {
  // The asker's stall timer, or the holder's own (it ends the connection then), whichever fires first.
  const { why, waited } = await cutTransfer(4, false);
  assert.match(why, /from a peer: (no progress for 5 s|the data channel closed|the peer closed the connection)/);
  assert.ok(waited >= 4500, `given up ${waited} ms after the transfer stalled: by a stall timer`);
});
