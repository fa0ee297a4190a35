// The agent Worker: receives its options from `start()`, then runs the Rust agent.
import init, { agent_main } from './idlecore_wasm.js';

// One executor Worker per slot, spawned by the agent (nested dedicated Workers).
const spawnExecutor = () => new Worker(new URL('./executor.js', import.meta.url), { type: 'module' });

self.onmessage = async (event) => {
  self.onmessage = null;
  try {
    await init();
    agent_main(event.data, spawnExecutor);
  } catch (e) {
    self.postMessage({ type: 'error', message: String(e && e.message ? e.message : e) });
  }
};
