// An executor Worker: runs the task modules the agent posts to it, one at a time.
import init, { executor_main } from './idlecore_wasm.js';

// A failure is rethrown outside the promise so the agent sees an `error` event.
init()
  .then(() => executor_main())
  .catch((e) => setTimeout(() => { throw e; }));
