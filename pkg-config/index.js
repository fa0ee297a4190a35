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
import { peerHost } from './peers.js';

const EVENTS = ['status', 'task', 'error'];
const LOCK = 'idlecore-agent';
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

/**
 * Starts giving this page's idle CPU to a coordinator. Throws only for invalid
 * options; see index.d.ts for the options and the handle.
 */
export function start(options) {
  const opts = validate(options);
  const listeners = Object.fromEntries(EVENTS.map((e) => [e, new Set()]));
  const emit = (type, payload) => {
    for (const cb of listeners[type]) {
      try { cb(payload); } catch (e) { console.error('idlecore: listener failed', e); }
    }
  };
  let last = { state: 'starting', tasksDone: 0, tasksFailed: 0, cpuSeconds: 0, bytesIn: 0, bytesOut: 0, workers: 0, cpu: 0 };
  const status = (state, extra = {}) => {
    last = { ...last, ...extra, state };
    emit('status', { type: 'status', ...last });
  };
  const fail = (message) => {
    emit('error', { type: 'error', message });
    status('failed', { lastError: message });
  };

  let worker = null;
  // The agent's peer connections (WebRTC lives on the page).
  let peers = null;
  let agentReady = false;
  let stopped = false;
  let indicator = null;
  let releaseLock = null;
  let banner = null;
  // Tabs of this origin: a visible tab waiting for the agent asks a hidden holder for it.
  let tabs = null;
  const abort = typeof AbortController === 'function' ? new AbortController() : null;
  const reasons = { user: false, hidden: false, battery: false };
  const paused = () => reasons.user || reasons.hidden || reasons.battery;
  const cleanups = [];

  const post = (msg) => {
    if (worker && agentReady) worker.postMessage(msg);
  };
  const sync = () => {
    post({ cmd: paused() ? 'pause' : 'resume' });
    if (indicator) indicator.update(paused() ? 'CPU sharing paused' : `Sharing idle CPU (${Math.round(opts.cpu * 100)}%)`);
  };

  // Follows visibility and battery from now on; resolves once the battery state is known.
  async function watchPage() {
    if (opts.pauseWhenHidden && typeof document !== 'undefined') {
      const onVisibility = () => {
        reasons.hidden = document.visibilityState === 'hidden';
        sync();
        if (reasons.hidden) handOver();
        else if (!releaseLock && tabs) tabs.postMessage('want');
      };
      reasons.hidden = document.visibilityState === 'hidden';
      document.addEventListener('visibilitychange', onVisibility);
      cleanups.push(() => document.removeEventListener('visibilitychange', onVisibility));
    }
    if (typeof BroadcastChannel === 'function') {
      tabs = new BroadcastChannel(LOCK);
      tabs.onmessage = (e) => {
        if (e.data === 'want' && reasons.hidden) handOver();
      };
      cleanups.push(() => {
        tabs.close();
        tabs = null;
      });
    }
    // A refusal in another tab of this origin (its banner, its Stop) stops this one too.
    const onStorage = (e) => {
      if (e.key === KEY && e.newValue === 'denied') handle.stop();
    };
    if (typeof addEventListener === 'function') {
      addEventListener('storage', onStorage);
      cleanups.push(() => removeEventListener('storage', onStorage));
    }
    if (opts.pauseOnBattery && globalThis.navigator && typeof navigator.getBattery === 'function') {
      try {
        const battery = await navigator.getBattery();
        const onCharging = () => {
          reasons.battery = !battery.charging;
          sync();
        };
        reasons.battery = !battery.charging;
        battery.addEventListener('chargingchange', onCharging);
        cleanups.push(() => battery.removeEventListener('chargingchange', onCharging));
      } catch {
        // No battery information: never pause for it.
      }
    }
  }

  function launch() {
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
    worker.onmessage = (event) => {
      const msg = event.data;
      if (msg && msg.type === 'rtc') {
        peers.onMessage(msg);
        return;
      }
      if (!msg || !EVENTS.includes(msg.type)) return;
      if (msg.type === 'status') {
        const first = !agentReady;
        agentReady = true;
        const { type, ...fields } = msg;
        last = { ...last, ...fields };
        if (first) {
          post({ cmd: 'cpu', cpu: opts.cpu });
          sync();
        }
      }
      if (msg.type === 'error' && msg.fatal) {
        teardown();
        fail(msg.message);
        return;
      }
      emit(msg.type, msg);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      teardown();
      fail(event.message || 'the agent Worker failed to load');
    };
    const config = {
      coordinator: opts.coordinator,
      cpu: opts.cpu,
      cores: opts.cores ?? ((globalThis.navigator && navigator.hardwareConcurrency) || 2),
      agent: `idlecore-web/0.1 ${globalThis.navigator ? navigator.userAgent : ''}`.slice(0, 512),
      paused: paused(),
    };
    for (const k of ['maxWorkers', 'prefetch', 'moduleCacheMib', 'peers', 'transport']) if (opts[k] !== undefined) config[k] = opts[k];
    worker.postMessage(config);
    status('loading');
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
    if (releaseLock) releaseLock();
    releaseLock = null;
  }

  function teardown() {
    endAgent();
    if (banner) banner.close();
    banner = null;
    for (const c of cleanups.splice(0)) c();
  }

  // Runs the agent while this tab holds the origin's lock; other tabs wait.
  async function holdLock() {
    status('standby');
    try {
      const held = navigator.locks.request(LOCK, abort ? { signal: abort.signal } : {}, () => {
        if (stopped) return undefined;
        // Refused in another tab while this one waited.
        if (storedChoice() === 'denied') {
          teardown();
          status('declined');
          return undefined;
        }
        if (!launch()) return undefined;
        return new Promise((resolve) => { releaseLock = resolve; });
      });
      // A hidden holder hearing this hands the agent over. Asked once the
      // request is surely registered (a query after it sees it), so the
      // holder's own query finds it pending.
      if (tabs && !reasons.hidden) navigator.locks.query().then(() => tabs && tabs.postMessage('want'), () => {});
      await held;
    } catch (e) {
      if (!stopped) fail(`cannot take the agent lock: ${e && e.message ? e.message : e}`);
    }
  }

  // A hidden tab holding the agent gives it to a tab waiting for it (which
  // may be the one the visitor is looking at) and queues behind it.
  async function handOver() {
    if (!releaseLock || !navigator.locks.query) return;
    const { pending = [] } = await navigator.locks.query();
    if (!releaseLock || !reasons.hidden || !pending.some((l) => l.name === LOCK)) return;
    endAgent();
    holdLock();
  }

  async function run() {
    if (stopped) return;
    const missing = unsupported();
    if (missing) return status('unsupported', { lastError: missing });
    if (storedChoice() === 'denied') return status('declined');
    if (opts.consent === 'ask' && storedChoice() !== 'granted') {
      status('waiting-consent');
      await bodyReady();
      if (stopped) return;
      banner = askConsent(opts.banner);
      const yes = await banner.answer;
      banner = null;
      remember(yes ? 'granted' : 'denied');
      if (!yes) return status('declined');
    }
    await bodyReady();
    if (stopped) return;
    await watchPage();
    if (stopped) return teardown();
    if (globalThis.navigator && navigator.locks) await holdLock();
    else launch();
  }

  const handle = {
    /** Listens for 'status' | 'task' | 'error'; returns a function that stops listening. */
    on(type, cb) {
      if (!EVENTS.includes(type)) throw new TypeError(`idlecore: unknown event ${type}`);
      if (typeof cb !== 'function') throw new TypeError('idlecore: on(type, cb) needs a function');
      listeners[type].add(cb);
      return () => listeners[type].delete(cb);
    },
    /** Stops the agent and every executor at once; a stopped handle stays stopped. */
    stop() {
      if (stopped) return;
      stopped = true;
      if (abort) abort.abort();
      teardown();
      status('stopped', { workers: 0, cpu: 0 });
    },
    /** Stops computing within a second, keeping the connection; `resume()` goes on. */
    pause() {
      reasons.user = true;
      sync();
    },
    resume() {
      reasons.user = false;
      sync();
    },
    /** A new share of the device's cores × time, 0 to 1. */
    setCpu(fraction) {
      if (!OPTIONS.cpu[0](fraction)) throw new TypeError(`idlecore: setCpu takes ${OPTIONS.cpu[1]}`);
      opts.cpu = fraction;
      post({ cmd: 'cpu', cpu: fraction });
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
