// An executor Worker: runs the task modules the agent posts to it, one at a time.
import init, { executor_main } from './idlecore_wasm.js';

await init();
executor_main();
