// A visitor that reaches the coordinator over a WebRTC data channel only
// (`transport: 'webrtc'`; the coordinator runs with `--rtc-listen`): the
// whole session, leases and reports, frames larger than one data channel
// message both ways, runs over the channel. In a network namespace (see
// peers.test.mjs); the coordinator's ICE candidate is the namespace's veth address.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCoordinator, launch, open, lastStatus, waitFor, finish, ROOT, scratchDir } from '../harness.mjs';
import { NO_CHANNEL_TRANSFER } from './common.mjs';

const PAGE = '<!doctype html><body><script src="/pkg/idlecore.js" data-coordinator="/ws" data-cpu="1" '
  + 'data-consent="granted" data-max-workers="1" data-transport="webrtc" defer></script>';

let c;
let browser;

before(async () => {
  const www = scratchDir('www');
  writeFileSync(join(www, 'rtc.html'), PAGE);
  c = await startCoordinator({ www, extraArgs: ['--rtc-listen', '10.99.0.2:0', '--blob-threshold-kib', '1024'] });
  browser = await launch({ args: ['--disable-features=WebRtcHideLocalIpsWithMdns'] });
});
after(async () => {
  await browser?.close();
  c?.stop();
});

/** One visitor's session over the data channel, checked end to end; `script` runs in its page first. */
async function wholeSession(script) {
  const context = await browser.newContext();
  if (script) await context.addInitScript(script);
  const { page, errors } = await open(context, `${c.base}/rtc.html`);
  await waitFor('the visitor to connect', async () => (await lastStatus(page))?.state === 'connected', 30_000);
  assert.deepEqual((await c.api.stats()).transports, { websocket: 0, data_channel: 1 });

  // Inputs of 300 kB, inline (under the blob threshold): each lease frame is several pieces on the channel.
  const hashchain = await c.api.upload('hashchain');
  const inputs = [0, 1, 2].map((i) => Buffer.alloc(300_000, 97 + i));
  const job = await c.api.createJob({
    module: hashchain,
    tasks: inputs.map((input) => ({ stdin: input.toString('base64'), args: ['--rounds', '10'] })),
  });
  for (const r of await finish(c, job)) {
    assert.equal(r.status, 'done', JSON.stringify(r));
    const want = execFileSync(join(ROOT, 'target/release/hashchain'), ['--rounds', '10'], { input: inputs[r.task] });
    assert.equal(Buffer.from(r.stdout, 'base64').toString(), want.toString(), `task ${r.task}`);
  }

  // Outputs of 400 kB: each report is several pieces the other way.
  const probe = await c.api.upload('wasi-probe');
  const flood = await c.api.createJob({
    module: probe,
    limits: { max_output_bytes: 1 << 20 },
    tasks: [{ stdin: '', args: ['flood', '400000'] }, { stdin: '', args: ['flood', '123457'] }],
  });
  for (const r of await finish(c, flood)) {
    assert.equal(r.status, 'done', JSON.stringify(r));
    const out = Buffer.from(r.stdout, 'base64');
    assert.equal(out.length, [400000, 123457][r.task]);
    assert.equal(createHash('sha256').update(out).digest('hex'), createHash('sha256').update(Buffer.alloc(out.length, 'x')).digest('hex'));
  }

  const s = await lastStatus(page);
  assert.equal(s.state, 'connected');
  assert.equal(s.connects, 1, 'one session all along');
  assert.deepEqual((await c.api.stats()).transports, { websocket: 0, data_channel: 1 }, 'never a WebSocket');
  assert.deepEqual(errors, []);

  // The visitor leaves: the coordinator sees the session end.
  await context.close();
  await waitFor('the session to end', async () => (await c.api.stats()).workers === 0, 30_000);
  assert.deepEqual((await c.api.stats()).transports, { websocket: 0, data_channel: 0 });
}

test('a visitor runs its whole session over a data channel', () => wholeSession());

test('a visitor runs its whole session over a data channel the page relays', () => wholeSession(NO_CHANNEL_TRANSFER));
