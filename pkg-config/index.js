// idlecore for pages and bundlers: `import { start } from 'idlecore'`.

const EVENTS = ['status', 'task', 'error'];

function coordinatorUrl(value) {
  if (typeof value !== 'string' || value === '') {
    throw new TypeError('idlecore: `coordinator` must be a URL such as "wss://example.org/ws"');
  }
  const url = new URL(value, globalThis.location ? globalThis.location.href : undefined);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new TypeError(`idlecore: unsupported coordinator URL ${value}`);
  }
  return url.href;
}

function defaultSlots() {
  const cores = (globalThis.navigator && navigator.hardwareConcurrency) || 2;
  return Math.max(1, cores - 1);
}

/**
 * Starts a worker agent in a dedicated module Worker.
 * @param {{coordinator: string, slots?: number, prefetch?: number, moduleCacheMib?: number}} options
 */
export function start(options = {}) {
  const listeners = Object.fromEntries(EVENTS.map((e) => [e, new Set()]));
  const emit = (type, payload) => {
    for (const cb of listeners[type]) {
      try { cb(payload); } catch (e) { console.error('idlecore: listener failed', e); }
    }
  };
  const config = {
    coordinator: coordinatorUrl(options.coordinator),
    slots: options.slots ?? defaultSlots(),
    agent: `idlecore-web/0.1 ${globalThis.navigator ? navigator.userAgent : ''}`.slice(0, 512),
  };
  if (options.moduleCacheMib !== undefined) config.moduleCacheMib = options.moduleCacheMib;
  if (options.prefetch !== undefined) config.prefetch = options.prefetch;
  let worker = new Worker(new URL('./agent.js', import.meta.url), { type: 'module' });
  worker.onmessage = (event) => {
    const msg = event.data;
    if (msg && EVENTS.includes(msg.type)) emit(msg.type, msg);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    emit('error', { type: 'error', message: event.message || 'agent worker failed to load' });
  };
  worker.postMessage(config);
  return {
    /** Listens for 'status' | 'task' | 'error'; returns a function that stops listening. */
    on(type, cb) {
      if (!EVENTS.includes(type)) throw new TypeError(`idlecore: unknown event ${type}`);
      listeners[type].add(cb);
      return () => listeners[type].delete(cb);
    },
    /** Stops the agent and every executor at once. */
    stop() {
      if (!worker) return;
      worker.terminate();
      worker = null;
      emit('status', { type: 'status', state: 'stopped' });
    },
  };
}
