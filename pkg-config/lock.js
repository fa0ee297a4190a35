// One agent per origin. Every tab asks for the same Web Lock; the holder
// runs the agent and the others wait in standby. A holder whose tab is
// hidden hands the agent to a tab waiting for it (asked for over a
// BroadcastChannel by a visible waiting tab), so the tab the visitor looks
// at computes. Browsers without Web Locks run one agent per page.

const LOCK = 'idlecore-agent';

/**
 * `run()` starts the agent once the lock is this tab's and returns false if
 * it could not; `end()` ends it when the lock goes to another tab (and must
 * `release()` it); `standby()` is called while this tab waits; `hidden()`
 * says whether this tab is hidden; `fail(message)` reports a lock that
 * cannot be taken. Returns `{ hold(), handOver(), want(), release(), close() }`.
 */
export function agentLock({ run, end, standby, hidden, fail, signal }) {
  let release = null;
  let closed = false;
  const tabs = typeof BroadcastChannel === 'function' ? new BroadcastChannel(LOCK) : null;
  if (tabs) {
    tabs.onmessage = (e) => {
      if (e.data === 'want' && hidden()) lock.handOver();
    };
  }
  const lock = {
    /** Runs the agent while this tab holds the lock (at once, without Web Locks). */
    async hold() {
      if (!globalThis.navigator || !navigator.locks) {
        run();
        return;
      }
      standby();
      try {
        const held = navigator.locks.request(LOCK, signal ? { signal } : {}, () => {
          if (closed || !run()) return undefined;
          return new Promise((resolve) => { release = resolve; });
        });
        // A hidden holder hearing this hands the agent over. Asked once the
        // request is surely registered (a query after it sees it), so the
        // holder's own query finds it pending.
        if (tabs && !hidden()) navigator.locks.query().then(() => tabs && tabs.postMessage('want'), () => {});
        await held;
      } catch (e) {
        if (!closed) fail(`cannot take the agent lock: ${e && e.message ? e.message : e}`);
      }
    },
    /** A hidden holder gives the agent to a tab waiting for it and queues behind it. */
    async handOver() {
      if (!release || !navigator.locks.query) return;
      const { pending = [] } = await navigator.locks.query();
      if (!release || !hidden() || !pending.some((l) => l.name === LOCK)) return;
      end();
      lock.hold();
    },
    /** This tab is visible again: if it waits for the agent, it asks for it. */
    want() {
      if (!release && tabs) tabs.postMessage('want');
    },
    /** Lets the next tab have the agent. */
    release() {
      if (release) release();
      release = null;
    },
    close() {
      closed = true;
      lock.release();
      if (tabs) tabs.close();
    },
  };
  return lock;
}
