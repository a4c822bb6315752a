// Whether something listens on a TCP port of this host: the readiness of a web process. One
// shared scan of /proc/net/tcp and tcp6 per tick serves every watched port, so a thousand
// processes waiting to bind cost one small file read each tick, not a thousand connects. Where
// /proc/net is not readable, a connect probe on loopback does the same.
import { connect } from 'node:net';
import { readFile } from 'node:fs/promises';

/** Listening ports in the text of /proc/net/tcp or tcp6 (state 0A is LISTEN). */
export function listeningPorts(text: string, into = new Set<number>()): Set<number> {
  for (const line of text.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4 || cols[3] !== '0A') continue;
    const colon = cols[1].lastIndexOf(':');
    if (colon < 0) continue;
    const port = parseInt(cols[1].slice(colon + 1), 16);
    if (Number.isInteger(port)) into.add(port);
  }
  return into;
}

async function scanProc(): Promise<Set<number> | null> {
  const ports = new Set<number>();
  let any = false;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      listeningPorts(await readFile(file, 'utf8'), ports);
      any = true;
    } catch {
      // tcp6 is absent without IPv6
    }
  }
  return any ? ports : null;
}

function tryConnect(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** True once a connection to `port` on 127.0.0.1 (or ::1, for an app bound to IPv6 only) succeeds. */
export async function acceptsConnections(port: number, timeoutMs = 1000): Promise<boolean> {
  return (await tryConnect('127.0.0.1', port, timeoutMs)) || (await tryConnect('::1', port, timeoutMs));
}

export interface ReadinessWatch {
  /** Resolves true once ready, false when the timeout passed or the watch was cancelled. */
  readonly ready: Promise<boolean>;
  cancel(): void;
}

interface Watcher {
  port: number;
  deadline: number;
  settle: (ok: boolean) => void;
}

const watchers = new Set<Watcher>();
let timer: NodeJS.Timeout | null = null;
let scanning = false;
const TICK_MS = 100;

async function tick(): Promise<void> {
  timer = null;
  if (scanning || watchers.size === 0) return;
  scanning = true;
  try {
    const listening = await scanProc();
    const now = Date.now();
    await Promise.all(
      [...watchers].map(async (w) => {
        const ok = listening ? listening.has(w.port) : await acceptsConnections(w.port, 500);
        if (ok) w.settle(true);
        else if (now >= w.deadline) w.settle(false);
      }),
    );
  } finally {
    scanning = false;
    // One timer for all watchers, only while there are any: nothing is left behind.
    if (watchers.size > 0 && !timer) timer = setTimeout(() => void tick(), TICK_MS);
  }
}

/** Watches `port` until something listens on it or `timeoutMs` passes. */
export function watchReadiness(port: number, opts: { timeoutMs: number }): ReadinessWatch {
  let settle!: (ok: boolean) => void;
  const ready = new Promise<boolean>((resolve) => (settle = resolve));
  const w: Watcher = {
    port,
    deadline: Date.now() + opts.timeoutMs,
    settle: (ok) => {
      if (!watchers.delete(w)) return;
      settle(ok);
      if (watchers.size === 0 && timer) {
        clearTimeout(timer);
        timer = null;
      }
    },
  };
  watchers.add(w);
  if (!timer && !scanning) timer = setTimeout(() => void tick(), 0);
  return { ready, cancel: () => w.settle(false) };
}
