import { exitDetail, liveDetail } from '../process/exit.js';
import type { ManagedProcess } from '../agent/supervisor.js';
import { envDigest, sourceDigest } from './digest.js';

/** Links are absolute, built from the Host the caller used, so they work through any address. */
export interface Base {
  http: string;
  ws: string;
}

export function baseFromHost(host: string | null | undefined, fallback: string): Base {
  const h = host && /^[A-Za-z0-9.\-:[\]]+$/.test(host) ? host : fallback;
  return { http: `http://${h}`, ws: `ws://${h}` };
}

export function indexDocument(base: Base) {
  return {
    create: `${base.http}/create-process`,
    list: `${base.http}/list-processes`,
    data: `${base.http}/data`,
    // Server-Sent Events at this URL; a WebSocket at the same path (ws://).
    inspect: `${base.http}/inspect`,
    machine: `${base.http}/machine`,
    ui: `${base.http}/ui`,
  };
}

export function statusUrl(base: Base, slug: string): string {
  return `${base.http}/process-status/${encodeURIComponent(slug)}`;
}

/** The seed-001 status document plus drover's additions (pid, restarts, errors, ...). */
export function statusDocument(base: Base, proc: ManagedProcess) {
  const snap = proc.actor.getSnapshot();
  const ctx = snap.context;
  const slug = encodeURIComponent(proc.slug);
  const status = statusUrl(base, proc.slug);
  return {
    app: proc.app,
    node: proc.node,
    process_type: proc.processType,
    slug: proc.slug,
    state: snap.value,
    attach: `${base.ws}/attach-console/${slug}`,
    details: status,
    status,
    delete: `${base.http}/delete-process/${slug}`,
    ...controlLinks(base, slug),
    events: `${base.http}/process-events/${slug}`,
    pid: ctx.pid,
    port: proc.port,
    restarts: ctx.restarts,
    created_at: proc.createdAt.toISOString(),
    started_at: snap.value === 'running' && proc.startedAt ? proc.startedAt.toISOString() : null,
    errors: ctx.errors,
    // Names only: values often hold secrets.
    env_names: Object.keys(proc.env),
    source_digest: sourceDigest(proc.sourceUrl),
    env_digest: envDigest(proc.env),
    stopped: ctx.stopped,
    restart_policy: {
      policy: proc.restartSettings.policy,
      delay_ms: proc.restartSettings.delayMs,
      max_delay_ms: proc.restartSettings.maxDelayMs,
      reset_after_ms: proc.restartSettings.resetAfterMs,
    },
    last_exit: exitDetail(ctx.lastExit),
    usage: liveDetail(proc.metrics.live),
  };
}

/** Control and metrics links (lib/http/control.ts); `slug` is already URL-encoded. */
function controlLinks(base: Base, slug: string) {
  return {
    signal: `${base.http}/signal-process/${slug}`,
    stop: `${base.http}/stop-process/${slug}`,
    start: `${base.http}/start-process/${slug}`,
    restart: `${base.http}/restart-process/${slug}`,
    metrics: `${base.http}/process-metrics/${slug}`,
  };
}
