// Starting module Workers whose scripts may live on another origin (a CDN).
//
// A Worker's script must be same-origin with the page. When it is not, the
// Worker is started from a one-line Blob URL (same-origin by construction)
// that imports the real script; module imports are CORS fetches, so the CDN
// must send `Access-Control-Allow-Origin`. Callers keep the literal
// `new Worker(new URL('./x.js', import.meta.url), { type: 'module' })` for
// the same-origin case so that bundlers find and bundle the worker script.

/**
 * True when scripts next to `moduleUrl` are on another web origin than this
 * page or Worker. A bundler may have replaced `import.meta.url` (webpack puts
 * the source file's `file:` URL there); it rewrites the literal Worker
 * expression too, so only http(s) URLs on another origin need a Blob.
 */
export function crossOrigin(moduleUrl) {
  try {
    const url = new URL(moduleUrl);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.origin !== self.location.origin;
  } catch {
    return false;
  }
}

/** A module Worker running `scriptUrl` (absolute) from any origin. */
export function blobWorker(scriptUrl) {
  const source = `import ${JSON.stringify(String(scriptUrl))};\n`;
  const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
  try {
    return new Worker(url, { type: 'module' });
  } finally {
    // The Worker has fetched the Blob by the time its script runs.
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
