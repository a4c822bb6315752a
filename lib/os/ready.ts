// Whether something accepts TCP connections on a port of this host: the readiness of a web
// process. A connect probe sees what a client would: a listener on any loopback-reachable address.
import { connect } from 'node:net';

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

/**
 * Probes `port` every `intervalMs` until it accepts connections or `timeoutMs` passes. One
 * timer at a time, cleared on cancel: nothing is left behind when the child exits first.
 */
export function watchReadiness(port: number, opts: { timeoutMs: number; intervalMs?: number }): ReadinessWatch {
  const deadline = Date.now() + opts.timeoutMs;
  let timer: NodeJS.Timeout | undefined;
  let finished = false;
  let settle!: (ok: boolean) => void;
  const ready = new Promise<boolean>((resolve) => (settle = resolve));
  const finish = (ok: boolean) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    settle(ok);
  };
  const probe = async () => {
    if (finished) return;
    if (await acceptsConnections(port, 500)) return finish(true);
    if (Date.now() >= deadline) return finish(false);
    if (!finished) timer = setTimeout(probe, Math.min(opts.intervalMs ?? 100, Math.max(0, deadline - Date.now())));
  };
  timer = setTimeout(probe, 0);
  return { ready, cancel: () => finish(false) };
}
