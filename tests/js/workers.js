// Workers for the message benchmarks, made from Blob URLs so they need no
// files of their own. The test runner serves its wasm-bindgen output as
// /wasm-bindgen-test.js (and its wasm beside it); an executor is that module running `executor_main`,
// exactly as the package's executor.js runs it.

function moduleWorker(source) {
  const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
  return new Worker(url, { type: 'module' });
}

export function spawn_test_executor() {
  const at = (path) => JSON.stringify(new URL(path, self.location.origin).href);
  return moduleWorker(`import init, { executor_main } from ${at('/wasm-bindgen-test.js')};
await init({ module_or_path: ${at('/wasm-bindgen-test_bg.wasm')} });
executor_main();`);
}

// The floor under any executor's round trip: a Worker that reads each
// message and answers with a small transferred buffer, as an executor does.
export function spawn_echo_worker() {
  return moduleWorker(`self.postMessage('ready');
self.onmessage = (e) => {
  if (!Array.isArray(e.data)) throw new Error('expected [module, frame]');
  const reply = new Uint8Array(32);
  self.postMessage(reply, [reply.buffer]);
};`);
}
