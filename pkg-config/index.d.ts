// Types of `import { start } from 'idlecore'`.

export interface Options {
  /** The coordinator's worker endpoint: `wss://host/ws` (http(s) URLs become ws(s); relative ones resolve against the page). */
  coordinator: string;
  /** Identifies the site to the coordinator (sent as `?site=` on the socket URL). */
  siteKey?: string;
  /** Share of the device's cores × time to give, 0 to 1. Default 0.25. At most all cores but one are used unless `maxWorkers` says otherwise. */
  cpu?: number;
  /** `'ask'` (default): show the consent banner unless the visitor already chose. `'granted'`: the site has consent already. A visitor's earlier "No thanks" or Stop is honoured in both cases. */
  consent?: 'ask' | 'granted';
  /** Most executor Workers at once. Default `hardwareConcurrency - 1` (at least 1). */
  maxWorkers?: number;
  /** Leases queued beyond the running ones. Default one per executor. */
  prefetch?: number;
  /** Memory for compiled task modules, in MiB. Default 256. */
  moduleCacheMib?: number;
  /** Cores of the device. Default `navigator.hardwareConcurrency`. */
  cores?: number;
  /** Pause while the page is hidden. Default true. */
  pauseWhenHidden?: boolean;
  /** Pause while the device runs on battery, where the Battery Status API exists. Default true. */
  pauseOnBattery?: boolean;
  /** Fetch task modules from other visitors and serve them to others over WebRTC data channels (peers learn each other's IP addresses). Default true. */
  peers?: boolean;
  /** How to reach the coordinator: `'websocket'` (default), or `'webrtc'`: a WebRTC data channel (for networks that block WebSockets; the coordinator must run with `--rtc-listen`). */
  transport?: 'websocket' | 'webrtc';
  /** Show the "Sharing idle CPU · Stop" badge while running. Default true; a site that hides it must offer its own stop control. */
  indicator?: boolean;
  /** Texts of the consent banner. */
  banner?: { text?: string; allow?: string; decline?: string };
}

export type State =
  | 'starting'
  | 'unsupported'
  | 'waiting-consent'
  | 'declined'
  | 'standby'
  | 'loading'
  | 'connecting'
  | 'connected'
  | 'paused'
  | 'disconnected'
  | 'failed'
  | 'stopped';

export interface Stats {
  state: State;
  tasksDone: number;
  tasksFailed: number;
  /** Seconds executors spent running tasks. */
  cpuSeconds: number;
  bytesIn: number;
  bytesOut: number;
  bytesMoved: number;
  /** Executors running now. */
  workers: number;
  /** Share of the device given now (0 while paused). */
  cpu: number;
}

export interface StatusEvent extends Partial<Stats> {
  type: 'status';
  state: State;
  coordinator?: string;
  running?: number;
  queued?: number;
  connects?: number;
  modulesFromCache?: number;
  /** Modules fetched from other visitors over WebRTC data channels. */
  modulesFromPeers?: number;
  /** Module bytes received from peers (not in `bytesIn`). */
  bytesFromPeers?: number;
  /** Module bytes sent to peers. */
  bytesToPeers?: number;
  /** Peer fetches given up and fetched from the coordinator instead. */
  peerFallbacks?: number;
  lastError?: string | null;
}

export interface TaskEvent {
  type: 'task';
  job: number;
  task: number;
  ok: boolean;
  elapsedMs: number;
}

export interface ErrorEvent {
  type: 'error';
  message: string;
}

export interface Handle {
  on(type: 'status', cb: (e: StatusEvent) => void): () => void;
  on(type: 'task', cb: (e: TaskEvent) => void): () => void;
  on(type: 'error', cb: (e: ErrorEvent) => void): () => void;
  /** Ends the agent and every executor now. */
  stop(): void;
  /** Stops computing within a second; `resume()` goes on. */
  pause(): void;
  resume(): void;
  /** A new share of the device's cores × time, 0 to 1. */
  setCpu(fraction: number): void;
  stats(): Stats;
}

/** The handle's event types. */
export const EVENTS: readonly ['status', 'task', 'error'];

/** Starts giving idle CPU. Throws a TypeError for invalid options only; everything later is an event. */
export function start(options: Options): Handle;

/** Records the visitor's choice for this origin (for sites with their own consent UI); null forgets it. */
export function setConsent(choice: 'granted' | 'denied' | null): void;
