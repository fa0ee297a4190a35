// The visitor's say: the consent banner, the remembered choice, and the
// indicator with its Stop button shown while the page computes.

export const KEY = 'idlecore:consent';

/** The stored choice for this origin: 'granted', 'denied' or null. */
export function storedChoice() {
  try {
    const v = globalThis.localStorage && localStorage.getItem(KEY);
    return v === 'granted' || v === 'denied' ? v : null;
  } catch {
    return null; // storage blocked (sandboxed frame, privacy settings)
  }
}

export function remember(choice) {
  try {
    if (choice === null) localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, choice);
  } catch {
    // Not remembered: the banner asks again on the next page.
  }
}

const STYLE =
  'position:fixed;z-index:2147483647;bottom:1rem;font:14px/1.4 system-ui,sans-serif;color:#1b1b1b;' +
  'background:#fff;border:1px solid #767676;border-radius:.5rem;box-shadow:0 2px 8px rgba(0,0,0,.2);';
const BUTTON = 'font:inherit;margin-left:.5rem;padding:.25rem .75rem;border-radius:.25rem;cursor:pointer;';

function element(tag, attrs, style, text) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.style.cssText = style;
  if (text !== undefined) el.textContent = text;
  return el;
}

/**
 * Shows the banner. `answer` resolves to true (allowed) or false (declined);
 * `close()` removes the banner unanswered (`answer` then never resolves).
 * `texts`: {text, allow, decline}.
 */
export function askConsent(texts) {
  let box = null;
  const answer = new Promise((resolve) => {
    box = element('div', { role: 'dialog', 'aria-modal': 'false', 'aria-labelledby': 'idlecore-consent-text', 'data-idlecore': 'consent' },
      STYLE + 'left:1rem;right:1rem;max-width:36rem;margin:0 auto;padding:.75rem 1rem;');
    const text = element('p', { id: 'idlecore-consent-text' }, 'margin:0 0 .5rem;', texts.text);
    const allow = element('button', { type: 'button', 'data-idlecore': 'allow' }, BUTTON + 'background:#175ddc;color:#fff;border:1px solid #175ddc;', texts.allow);
    const decline = element('button', { type: 'button', 'data-idlecore': 'decline' }, BUTTON + 'background:#fff;color:#1b1b1b;border:1px solid #767676;', texts.decline);
    const row = element('div', {}, 'text-align:right;');
    row.append(decline, allow);
    box.append(text, row);
    const answer = (yes) => {
      box.remove();
      resolve(yes);
    };
    allow.addEventListener('click', () => answer(true));
    decline.addEventListener('click', () => answer(false));
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') answer(false);
    });
    document.body.append(box);
  });
  return { answer, close: () => box && box.remove() };
}

/** The "computing" badge with a Stop button; returns {update(text), remove()}. */
export function showIndicator(onStop) {
  const box = element('div', { role: 'status', 'data-idlecore': 'indicator' }, STYLE + 'right:1rem;padding:.25rem .5rem;');
  const label = element('span', {}, '', 'Sharing idle CPU');
  const stop = element('button', { type: 'button', 'data-idlecore': 'stop', 'aria-label': 'Stop sharing CPU' },
    BUTTON + 'background:#fff;color:#1b1b1b;border:1px solid #767676;padding:0 .5rem;', 'Stop');
  stop.addEventListener('click', onStop);
  box.append(label, stop);
  document.body.append(box);
  return {
    update(text) {
      label.textContent = text;
    },
    remove() {
      box.remove();
    },
  };
}

/** Resolves once `document.body` exists (a `<script>` in `<head>` runs before it). */
export function bodyReady() {
  if (document.body) return Promise.resolve();
  return new Promise((resolve) => document.addEventListener('DOMContentLoaded', () => resolve(), { once: true }));
}
