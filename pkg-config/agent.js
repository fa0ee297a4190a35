// The agent Worker: receives its options from `start()`, then runs the Rust agent.
import init, { agent_main } from './idlecore_wasm.js';
import { crossOrigin, blobWorker } from './spawn.js';

// Not a literal in the cross-origin branch, so bundlers do not copy the file as an asset.
const EXECUTOR = 'executor.js';

// One executor Worker per slot, spawned by the agent (nested dedicated Workers).
const spawnExecutor = crossOrigin(import.meta.url)
  ? () => blobWorker(new URL(/* webpackIgnore: true */ EXECUTOR, import.meta.url))
  : () => new Worker(new URL('./executor.js', import.meta.url), { type: 'module' });

self.onmessage = async (event) => {
  self.onmessage = null;
  try {
    await init();
    agent_main(event.data, spawnExecutor);
  } catch (e) {
    self.postMessage({ type: 'error', fatal: true, message: String(e && e.message ? e.message : e) });
  }
};
