// Script-tag entry:
//   <script src="https://HOST/idlecore.js" data-coordinator="wss://HOST/ws"
//           data-site-key="..." data-cpu="0.25" data-consent="ask|granted" defer></script>
// Runs `start()` with the tag's data-* attributes. The handle is
// `window.idlecore`; its events are dispatched on window as `idlecore:status`,
// `idlecore:task` and `idlecore:error`. Never throws into the page.
(function () {
  var script = document.currentScript;
  if (!script || !script.src) return;
  // Before the module loads its names are not at hand: these are messages.js's.
  var fail = function (message) {
    window.dispatchEvent(new CustomEvent('idlecore:error', { detail: { type: 'error', message: message } }));
    window.dispatchEvent(new CustomEvent('idlecore:status', { detail: { type: 'status', state: 'failed', lastError: message } }));
  };
  // data-* name → [option, parse]
  var number = Number;
  var bool = function (v) { return v !== 'false'; };
  var text = function (v) { return v; };
  var attrs = {
    'coordinator': ['coordinator', text], 'site-key': ['siteKey', text], 'cpu': ['cpu', number],
    'consent': ['consent', text], 'max-workers': ['maxWorkers', number], 'prefetch': ['prefetch', number],
    'module-cache-mib': ['moduleCacheMib', number], 'pause-when-hidden': ['pauseWhenHidden', bool],
    'pause-on-battery': ['pauseOnBattery', bool], 'indicator': ['indicator', bool],
    'peers': ['peers', bool], 'transport': ['transport', text],
  };
  var options = {};
  var banner = {};
  Object.keys(attrs).forEach(function (name) {
    var v = script.getAttribute('data-' + name);
    if (v !== null) options[attrs[name][0]] = attrs[name][1](v);
  });
  ['text', 'allow', 'decline'].forEach(function (k) {
    var v = script.getAttribute('data-banner-' + k);
    if (v !== null) banner[k] = v;
  });
  if (Object.keys(banner).length) options.banner = banner;
  var entry;
  try {
    entry = new URL('./index.js', script.src).href;
  } catch (e) {
    return fail(String(e));
  }
  import(entry)
    .then(function (mod) {
      var handle = mod.start(options);
      window.idlecore = handle;
      mod.EVENTS.forEach(function (type) {
        handle.on(type, function (detail) {
          window.dispatchEvent(new CustomEvent('idlecore:' + type, { detail: detail }));
        });
      });
    })
    .catch(function (e) {
      fail(String(e && e.message ? e.message : e));
    });
})();
