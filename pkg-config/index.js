// idlecore for pages and bundlers: `import { start } from 'idlecore'`.
//
// `start(options)` asks for consent (unless the site already has it), waits
// for this origin's one agent lock (one agent across tabs), then runs the
// agent in a module Worker. Nothing is fetched from the coordinator and no
// WebAssembly is compiled before consent. Problems after `start` returns
// (no WebAssembly, blocked by CSP, coordinator unreachable) become `status`
// and `error` events, never exceptions in the page.

import { crossOrigin, blobWorker } from './spawn.js';
import { KEY, askConsent, bodyReady, remember, showIndicator, storedChoice } from './consent.js';
import { agentLock } from './lock.js';
import * as msg from './messages.js';
import { watchPause } from './pause.js';
import { peerHost } from './peers.js';

const { EVENTS } = msg;
/** The handle's events: 'status', 'task' and 'error'. */
export { EVENTS } from './messages.js';
const AGENT = 'agent.js';
const TEXTS = {
  text: 'May this site use some of your device\u2019s idle processing power for computations while this page is open? ' +
    'It stops when you leave the page or press Stop.',
  allow: 'Allow',
  decline: 'No thanks',
};

const isInt = (v, lo, hi) => Number.isInteger(v) && v >= lo && v <= hi;
const isBool = (v) => typeof v === 'boolean';
// Each option: a check and what a valid value is, for the error message.
const OPTIONS = {
  coordinator: [(v) => typeof v === 'string' && v !== '', 'a ws://, wss://, http:// or https:// URL'],
  siteKey: [(v) => typeof v === 'string' && /^[A-Za-z0-9._-]{1,128}$/.test(v), 'up to 128 letters, digits, ".", "_" or "-"'],
  cpu: [(v) => typeof v === 'number' && v >= 0 && v <= 1, 'a number from 0 to 1'],
  consent: [(v) => v === 'ask' || v === 'granted', '"ask" or "granted"'],
  maxWorkers: [(v) => isInt(v, 1, 256), 'an integer from 1 to 256'],
  prefetch: [(v) => isInt(v, 0, 256), 'an integer from 0 to 256'],
  moduleCacheMib: [(v) => isInt(v, 1, 65536), 'an integer from 1 to 65536'],
  cores: [(v) => isInt(v, 1, 1024), 'an integer from 1 to 1024'],
  pauseWhenHidden: [isBool, 'true or false'],
  pauseOnBattery: [isBool, 'true or false'],
  peers: [isBool, 'true or false'],
  transport: [(v) => v === 'websocket' || v === 'webrtc', '"websocket" or "webrtc"'],
  indicator: [isBool, 'true or false'],
  banner: [(v) => v && typeof v === 'object' && Object.entries(v).every(([k, s]) => k in TEXTS && typeof s === 'string'),
    'an object with string fields text, allow and decline'],
};

function validate(options) {
  if (!options || typeof options !== 'object') throw new TypeError('idlecore: start(options) needs an options object');
  for (const [name, value] of Object.entries(options)) {
    const rule = OPTIONS[name];
    if (!rule) throw new TypeError(`idlecore: unknown option \`${name}\` (known: ${Object.keys(OPTIONS).join(', ')})`);
    if (value !== undefined && !rule[0](value)) throw new TypeError(`idlecore: option \`${name}\` must be ${rule[1]}`);
  }
  if (options.coordinator === undefined) throw new TypeError('idlecore: option `coordinator` is required');
  const url = new URL(options.coordinator, globalThis.location ? location.href : undefined);
  url.protocol = { 'http:': 'ws:', 'https:': 'wss:' }[url.protocol] || url.protocol;
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new TypeError(`idlecore: option \`coordinator\` must be ${OPTIONS.coordinator[1]}, not ${options.coordinator}`);
  }
  if (options.siteKey) url.searchParams.set('site', options.siteKey);
  return {
    pauseWhenHidden: true,
    pauseOnBattery: true,
    indicator: true,
    consent: 'ask',
    cpu: 0.25,
    ...options,
    coordinator: url.href,
    banner: { ...TEXTS, ...options.banner },
  };
}

function unsupported() {
  if (typeof WebAssembly !== 'object' || typeof WebAssembly.instantiate !== 'function') return 'no WebAssembly';
  if (typeof Worker !== 'function') return 'no Web Workers';
  return null;
}

/** Records the visitor's choice for this origin, for sites with their own consent UI. */
export function setConsent(choice) {
  if (choice !== 'granted' && choice !== 'denied' && choice !== null) {
    throw new TypeError('idlecore: setConsent takes "granted", "denied" or null');
  }
  remember(choice);
}

/** Listeners by event type: `on` adds one, `emit` calls each (a throwing one is logged). */
function listeners() {
  const all = Object.fromEntries(EVENTS.map((e) => [e, new Set()]));
  return {
    on(type, cb) {
      if (!EVENTS.includes(type)) throw new TypeError(`idlecore: unknown event ${type}`);
      if (typeof cb !== 'function') throw new TypeError('idlecore: on(type, cb) needs a function');
      all[type].add(cb);
      return () => all[type].delete(cb);
    },
    emit(type, payload) {
      for (const cb of all[type]) {
        try { cb(payload); } catch (e) { console.error('idlecore: listener failed', e); }
      }
    },
  };
}

/** The options the agent Worker takes (see `AgentOptions` in src/page/messages.rs). */
function agentOptions(opts, paused) {
  const config = {
    coordinator: opts.coordinator,
    cpu: opts.cpu,
    cores: opts.cores ?? ((globalThis.navigator && navigator.hardwareConcurrency) || 2),
    agent: `idlecore-web/0.1 ${globalThis.navigator ? navigator.userAgent : ''}`.slice(0, 512),
    paused,
  };
  for (const k of ['maxWorkers', 'prefetch', 'moduleCacheMib', 'peers', 'transport']) if (opts[k] !== undefined) config[k] = opts[k];
  return config;
}

/**
 * Starts giving this page's idle CPU to a coordinator. Throws only for invalid
 * options; see index.d.ts for the options and the handle.
 */
export function start(options) {
  const opts = validate(options);
  const events = listeners();
  let last = { state: msg.STARTING, tasksDone: 0, tasksFailed: 0, cpuSeconds: 0, bytesIn: 0, bytesOut: 0, workers: 0, cpu: 0 };
  const status = (state, extra = {}) => {
    last = { ...last, ...extra, state };
    events.emit(msg.STATUS, { type: msg.STATUS, ...last });
  };
  const fail = (message) => {
    events.emit(msg.ERROR, { type: msg.ERROR, message });
    status(msg.FAILED, { lastError: message });
  };

  let worker = null;
  // The agent's peer connections (WebRTC lives on the page).
  let peers = null;
  let agentReady = false;
  let stopped = false;
  let indicator = null;
  let banner = null;
  let pause = null;
  let lock = null;
  let unwatchRefusals = null;
  let userPaused = false;
  const abort = typeof AbortController === 'function' ? new AbortController() : null;
  const paused = () => userPaused || Boolean(pause && pause.paused());

  const post = (m) => {
    if (worker && agentReady) worker.postMessage(m);
  };
  const sync = () => {
    post({ cmd: paused() ? msg.PAUSE : msg.RESUME });
    if (indicator) indicator.update(paused() ? 'CPU sharing paused' : `Sharing idle CPU (${Math.round(opts.cpu * 100)}%)`);
  };

  function onAgentMessage(event) {
    const m = event.data;
    if (m && m.type === msg.RTC) {
      peers.onMessage(m);
      return;
    }
    if (!m || !EVENTS.includes(m.type)) return;
    if (m.type === msg.STATUS) {
      const first = !agentReady;
      agentReady = true;
      const { type, ...fields } = m;
      last = { ...last, ...fields };
      if (first) {
        post({ cmd: msg.CPU, cpu: opts.cpu });
        sync();
      }
    }
    if (m.type === msg.ERROR && m.fatal) {
      teardown();
      fail(m.message);
      return;
    }
    events.emit(m.type, m);
  }

  // Starts the agent Worker; false if the page does not allow it.
  function launch() {
    if (stopped) return false;
    // Refused in another tab while this one waited.
    if (storedChoice() === 'denied') {
      teardown();
      status(msg.DECLINED);
      return false;
    }
    try {
      worker = crossOrigin(import.meta.url)
        ? blobWorker(new URL(/* webpackIgnore: true */ AGENT, import.meta.url))
        : new Worker(new URL('./agent.js', import.meta.url), { type: 'module' });
    } catch (e) {
      worker = null;
      teardown();
      fail(`cannot start the agent Worker (blocked by the page's Content-Security-Policy?): ${e && e.message ? e.message : e}`);
      return false;
    }
    peers = peerHost(worker);
    worker.onmessage = onAgentMessage;
    worker.onerror = (event) => {
      event.preventDefault();
      teardown();
      fail(event.message || 'the agent Worker failed to load');
    };
    worker.postMessage(agentOptions(opts, paused()));
    status(msg.LOADING);
    if (opts.indicator && typeof document !== 'undefined') {
      indicator = showIndicator(() => {
        remember('denied');
        handle.stop();
      });
      sync();
    }
    return true;
  }

  // Ends the agent (if any) and gives the lock to the next tab.
  function endAgent() {
    if (worker) worker.terminate();
    worker = null;
    if (peers) peers.close();
    peers = null;
    agentReady = false;
    if (indicator) indicator.remove();
    indicator = null;
    if (lock) lock.release();
  }

  function teardown() {
    endAgent();
    if (banner) banner.close();
    banner = null;
    for (const part of [lock, pause]) if (part) part.close();
    lock = pause = null;
    if (unwatchRefusals) unwatchRefusals();
    unwatchRefusals = null;
  }

  // A refusal in another tab of this origin (its banner, its Stop) stops this one too.
  function watchRefusals() {
    if (typeof addEventListener !== 'function') return null;
    const onStorage = (e) => {
      if (e.key === KEY && e.newValue === 'denied') handle.stop();
    };
    addEventListener('storage', onStorage);
    return () => removeEventListener('storage', onStorage);
  }

  async function run() {
    if (stopped) return;
    const missing = unsupported();
    if (missing) return status(msg.UNSUPPORTED, { lastError: missing });
    if (storedChoice() === 'denied') return status(msg.DECLINED);
    if (opts.consent === 'ask' && storedChoice() !== 'granted') {
      status(msg.WAITING_CONSENT);
      await bodyReady();
      if (stopped) return;
      banner = askConsent(opts.banner);
      const yes = await banner.answer;
      banner = null;
      remember(yes ? 'granted' : 'denied');
      if (!yes) return status(msg.DECLINED);
    }
    await bodyReady();
    if (stopped) return;
    lock = agentLock({
      run: launch,
      end: endAgent,
      standby: () => status(msg.STANDBY),
      hidden: () => Boolean(pause && pause.hidden()),
      fail,
      signal: abort && abort.signal,
    });
    pause = watchPause(opts, sync, (hidden) => {
      if (!lock) return;
      if (hidden) lock.handOver();
      else lock.want();
    });
    unwatchRefusals = watchRefusals();
    await pause.ready;
    if (stopped) return teardown();
    await lock.hold();
  }

  const handle = {
    /** Listens for 'status' | 'task' | 'error'; returns a function that stops listening. */
    on: events.on,
    /** Stops the agent and every executor at once; a stopped handle stays stopped. */
    stop() {
      if (stopped) return;
      stopped = true;
      if (abort) abort.abort();
      teardown();
      status(msg.STOPPED, { workers: 0, cpu: 0 });
    },
    /** Stops computing within a second, keeping the connection; `resume()` goes on. */
    pause() {
      userPaused = true;
      sync();
    },
    resume() {
      userPaused = false;
      sync();
    },
    /** A new share of the device's cores × time, 0 to 1. */
    setCpu(fraction) {
      if (!OPTIONS.cpu[0](fraction)) throw new TypeError(`idlecore: setCpu takes ${OPTIONS.cpu[1]}`);
      opts.cpu = fraction;
      post({ cmd: msg.CPU, cpu: fraction });
      sync();
    },
    /** The latest figures: tasks done, CPU-seconds given, bytes moved. */
    stats() {
      const { tasksDone, tasksFailed, cpuSeconds, bytesIn, bytesOut, workers, cpu, state } = last;
      return { state, tasksDone, tasksFailed, cpuSeconds, bytesIn, bytesOut, bytesMoved: bytesIn + bytesOut, workers, cpu };
    },
  };
  // Listeners added right after `start` returns still see the first status.
  Promise.resolve().then(run).catch((e) => fail(String(e && e.message ? e.message : e)));
  return handle;
}
