// Why computing pauses on its own (besides the handle's `pause()`): a hidden
// page, a device on battery. `onChange` hears of every change; `onHidden` of
// the page's visibility.

/**
 * Follows the page from now on (as `opts.pauseWhenHidden` and
 * `opts.pauseOnBattery` ask). Returns `{ paused(), hidden(), ready, close() }`;
 * `ready` resolves once the battery's state is known.
 */
export function watchPause(opts, onChange, onHidden) {
  const reasons = { hidden: false, battery: false };
  const cleanups = [];
  if (opts.pauseWhenHidden && typeof document !== 'undefined') {
    const onVisibility = () => {
      reasons.hidden = document.visibilityState === 'hidden';
      onChange();
      onHidden(reasons.hidden);
    };
    reasons.hidden = document.visibilityState === 'hidden';
    document.addEventListener('visibilitychange', onVisibility);
    cleanups.push(() => document.removeEventListener('visibilitychange', onVisibility));
  }
  const ready = (async () => {
    if (!opts.pauseOnBattery || !globalThis.navigator || typeof navigator.getBattery !== 'function') return;
    try {
      const battery = await navigator.getBattery();
      const onCharging = () => {
        reasons.battery = !battery.charging;
        onChange();
      };
      reasons.battery = !battery.charging;
      battery.addEventListener('chargingchange', onCharging);
      cleanups.push(() => battery.removeEventListener('chargingchange', onCharging));
    } catch {
      // No battery information: never pause for it.
    }
  })();
  return {
    paused: () => reasons.hidden || reasons.battery,
    hidden: () => reasons.hidden,
    ready,
    close: () => cleanups.splice(0).forEach((c) => c()),
  };
}
