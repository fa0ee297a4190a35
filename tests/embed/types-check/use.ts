// Compiled by the embed tests with `tsc --noEmit`: the package's types accept
// the documented API and reject misuse.
import { start, setConsent, type Handle, type Stats } from 'idlecore';

const handle: Handle = start({ coordinator: 'wss://example.org/ws', cpu: 0.25, consent: 'ask', siteKey: 'site-1' });
handle.on('status', (s) => console.log(s.state, s.tasksDone));
handle.on('task', (t) => console.log(t.job, t.task, t.ok, t.elapsedMs));
handle.on('error', (e) => console.log(e.message));
handle.pause();
handle.resume();
handle.setCpu(0.5);
const stats: Stats = handle.stats();
const moved: number = stats.bytesMoved + stats.cpuSeconds + stats.tasksDone;
handle.stop();
setConsent('granted');
setConsent(null);
console.log(moved);

// @ts-expect-error: `cpu` is a number
start({ coordinator: 'wss://example.org/ws', cpu: 'half' });
// @ts-expect-error: `coordinator` is required
start({ cpu: 0.5 });
// @ts-expect-error: no such event
handle.on('progress', () => {});
// @ts-expect-error: consent is 'ask' or 'granted'
start({ coordinator: 'wss://example.org/ws', consent: 'yes' });
