// Script-tag entry: <script src=".../idlecore.js" data-coordinator="wss://HOST/ws"></script>
// Starts one agent for the page and reports its status as `idlecore:status`
// events on window; the handle is `window.idlecore`.
(function () {
  var script = document.currentScript;
  if (!script || !script.src) return;
  var coordinator = script.getAttribute('data-coordinator');
  var slots = script.getAttribute('data-slots');
  var prefetch = script.getAttribute('data-prefetch');
  import(new URL('./index.js', script.src).href)
    .then(function (mod) {
      var options = { coordinator: coordinator };
      if (slots) options.slots = Number(slots);
      if (prefetch) options.prefetch = Number(prefetch);
      var handle = mod.start(options);
      window.idlecore = handle;
      ['status', 'task', 'error'].forEach(function (type) {
        handle.on(type, function (detail) {
          window.dispatchEvent(new CustomEvent('idlecore:' + type, { detail: detail }));
        });
      });
    })
    .catch(function (e) {
      window.dispatchEvent(new CustomEvent('idlecore:error', { detail: { type: 'error', message: String(e) } }));
    });
})();
