// An app (built by Vite and by webpack) using the npm package: the coordinator comes from `?coordinator=`.
import { start } from 'idlecore';

const coordinator = new URLSearchParams(location.search).get('coordinator');
const handle = start({ coordinator, consent: 'granted', cpu: 1 });
window.handle = handle;
window.statuses = [];
handle.on('status', (s) => {
  window.statuses.push(s);
  document.getElementById('state').textContent = s.state;
});
