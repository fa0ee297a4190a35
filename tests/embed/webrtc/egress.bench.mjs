// A benchmark, not a test: the coordinator's egress and each visitor's wait
// for a large task input, with peer transfers on and (the baseline, same run)
// off. Visitors join one after another; each runs tasks that all read the
// same input blob. With peers on, the input reaches a visitor from one that
// has it. Run by `cargo xtask bench` inside a network namespace (see
// xtask/src/embed.rs); prints one JSON line.
//
//   node tests/embed/webrtc/egress.bench.mjs --visitors K --mib M

import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCoordinator, launch, open, lastStatus, waitFor, scratchDir } from '../harness.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const VISITORS = arg('--visitors', 4);
const MIB = arg('--mib', 16);

// One executor and no prefetched leases: a visitor holds one lease at a
// time, so a joining visitor gets tasks beside the others.
const page = (peers) => '<!doctype html><body><script src="/pkg/idlecore.js" data-coordinator="/ws" '
  + `data-cpu="1" data-consent="granted" data-max-workers="1" data-prefetch="0" data-peers="${peers}" defer></script>`;

/** Visitors join one by one; returns the egress and each visitor's wait for its first task. */
async function measure(c, browser, peers) {
  const module = await c.api.upload('hashchain');
  // Fresh bytes each run: no visitor or cache has this input yet.
  const blob = await c.api.uploadBlob(new Uint8Array(randomBytes(MIB << 20)));
  const before = await c.api.stats();
  const contexts = [];
  const pages = [];
  const firstTaskMs = [];
  const rates = [];
  try {
    for (let i = 0; i < VISITORS; i++) {
      const context = await browser.newContext();
      contexts.push(context);
      const { page: p } = await open(context, `${c.base}/${peers ? 'on' : 'off'}.html`);
      await waitFor('a visitor to connect', async () => (await lastStatus(p))?.state === 'connected', 30_000);
      // What the others have sent to peers, over time: the holders count bytes as they send them.
      const others = [...pages];
      pages.push(p);
      const sent = [];
      const sampler = setInterval(async () => {
        const statuses = await Promise.all(others.map((o) => lastStatus(o).catch(() => null)));
        sent.push([Date.now(), statuses.reduce((n, st) => n + (st?.bytesToPeers ?? 0), 0)]);
      }, 25);
      const started = Date.now();
      // Jobs until the new visitor has run one of the tasks (the others take some too).
      await waitFor('the new visitor to run a task', async () => {
        const done = async () => (await lastStatus(p))?.tasksDone > 0;
        const tasks = Array.from({ length: 2 * (i + 1) }, () => ({ stdin_blob: blob, args: ['--rounds', '1'] }));
        const job = await c.api.createJob({ module, tasks });
        await waitFor(`job ${job}`, async () => (await done()) || (await c.api.status(job)).state === 'completed', 120_000, 20);
        return done();
      }, 300_000, 0);
      firstTaskMs.push(Date.now() - started);
      clearInterval(sampler);
      const rate = transferRate(sent, MIB << 20);
      if (rate !== null) rates.push(rate);
    }
    // Bytes served from peers are counted once the fetch is reported.
    await new Promise((r) => setTimeout(r, 1000));
    const after = await c.api.stats();
    return {
      egress: after.download_bytes - before.download_bytes,
      peer_bytes: after.peers.peer_bytes - before.peers.peer_bytes,
      first_task_ms: firstTaskMs,
      peer_mib_per_s: rates,
    };
  } finally {
    for (const context of contexts) await context.close();
    await waitFor('the visitors to leave', async () => (await c.api.stats()).workers === 0, 20_000);
  }
}

/**
 * MiB/s of one input's transfer, from samples of [time, bytes sent to peers]:
 * between an eighth and seven eighths of the input (past the module, which
 * is far smaller, and before the end). Holders report every 250 ms, so this
 * is rough; `null` for an input too small to tell, or one not sent by peers.
 */
function transferRate(samples, input) {
  if (input < 8 << 20 || samples.length < 2) return null;
  const base = samples[0][1];
  const at = (bytes) => samples.find(([, n]) => n - base >= bytes)?.[0];
  const [t1, t2] = [at(input / 8), at((input * 7) / 8)];
  if (t1 === undefined || t2 === undefined || t2 <= t1) return null;
  return ((input * 3) / 4 / (1 << 20)) / ((t2 - t1) / 1000);
}

const www = scratchDir('www');
writeFileSync(join(www, 'on.html'), page(true));
writeFileSync(join(www, 'off.html'), page(false));
const c = await startCoordinator({ www });
// Host candidates as plain addresses (not mDNS names, which nothing resolves here).
const browser = await launch({ args: ['--disable-features=WebRtcHideLocalIpsWithMdns'] });
try {
  const off = await measure(c, browser, false);
  const on = await measure(c, browser, true);
  console.log(JSON.stringify({ visitors: VISITORS, input_bytes: MIB << 20, off, on }));
} finally {
  await browser.close();
  c.stop();
}
