// The messages between a page and its agent Worker, named once for the
// page's side (the agent's side names them in src/page/). Each is listed in
// docs/embedding.md.

/** What the agent posts, by `type`. The first three reach `handle.on(...)` listeners. */
export const STATUS = 'status';
export const TASK = 'task';
export const ERROR = 'error';
/** Requests for the page's peer connections (`peers.js`). */
export const RTC = 'rtc';
export const EVENTS = [STATUS, TASK, ERROR];

/** What the page posts after the options, by `cmd`. */
export const PAUSE = 'pause';
export const RESUME = 'resume';
export const CPU = 'cpu';
// `{cmd: RTC, ...}`: the page's peer connections' news.

/**
 * Status states the page sets (the agent's own are connecting, connected,
 * paused and disconnected).
 */
export const STARTING = 'starting';
export const UNSUPPORTED = 'unsupported';
export const WAITING_CONSENT = 'waiting-consent';
export const DECLINED = 'declined';
export const STANDBY = 'standby';
export const LOADING = 'loading';
export const FAILED = 'failed';
export const STOPPED = 'stopped';
