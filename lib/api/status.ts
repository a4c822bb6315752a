import type { ExitInfo } from '../os/child.js';
import type { LiveUsage } from '../os/usage.js';
import { redactUrl } from '../release/download.js';
import { exitDetail } from '../process/exit.js';
import type { ProcessState } from '../process/machine.js';
import type { ManagedProcess, RestartSettings } from '../agent/supervisor.js';
import type { Base } from './base.js';
import { envDigest, sourceDigest } from './digest.js';
import { liveDetail, type StageFigures } from './usage.js';

/**
 * What the documents show of one process, as plain data: the documents are pure functions
 * of it (testable without an agent), and `processView` is the only code that knows how a
 * ManagedProcess holds these fields.
 */
export interface ProcessView {
  slug: string;
  app: string;
  node: string;
  processType: string;
  sourceUrl: string;
  env: Record<string, string>;
  port: number;
  createdAt: Date;
  /** When the current (or last) child was started. */
  startedAt?: Date;
  restart: RestartSettings;
  state: ProcessState;
  /** The app's pid; `pgid` is its process group (led by the exit helper when there is one). */
  pid: number | null;
  pgid: number | null;
  restarts: number;
  errors: readonly string[];
  stopped: boolean;
  lastExit: ExitInfo | null;
  metrics: { build: StageFigures; run: StageFigures; live: LiveUsage | null; samples: readonly LiveUsage[] };
  /** Whether readiness is checked on $PORT (web, or `readiness: {port: true}`). */
  checksReadiness: boolean;
  /** When the current child became ready; null when none is. */
  readyAt: Date | null;
  /** sha256 of the archive the process runs (or last fetched). */
  archive?: string;
  /** What the current (or last) child runs and where that comes from; absent before the first start. */
  origin?: { command: string; from: string };
  /** Set for a proc (POST /procs): the client's id. */
  procId?: string;
}

export function processView(proc: ManagedProcess): ProcessView {
  const snap = proc.actor.getSnapshot();
  const ctx = snap.context;
  return {
    slug: proc.slug,
    app: proc.app,
    node: proc.node,
    processType: proc.processType,
    sourceUrl: proc.sourceUrl,
    env: proc.env,
    port: proc.port,
    createdAt: proc.createdAt,
    startedAt: proc.startedAt,
    restart: proc.restartSettings,
    state: snap.value,
    pid: ctx.pid,
    pgid: ctx.pgid,
    restarts: ctx.restarts,
    errors: ctx.errors,
    stopped: ctx.stopped,
    lastExit: ctx.lastExit,
    metrics: proc.metrics,
    checksReadiness: proc.checksReadiness,
    readyAt: proc.readyAt,
    archive: proc.record.archive,
    ...(proc.origin ? { origin: proc.origin } : {}),
    ...(proc.proc ? { procId: proc.proc.id } : {}),
  };
}

/** Whether a view shows what `last` was rendered from: every field the same value, or the same object (changes replace, never mutate). */
function unchanged(last: Rendered, view: ProcessView): boolean {
  const keys = Object.keys(view) as (keyof ProcessView)[];
  if (last.keys !== keys.length) return false;
  // `metrics` is one object for the process's life: its live sample is what the document shows.
  for (const k of keys) if (k !== 'metrics' && last.view[k] !== view[k]) return false;
  return last.live === view.metrics.live;
}

interface Rendered {
  http: string;
  ws: string;
  view: ProcessView;
  keys: number;
  live: ProcessView['metrics']['live'];
  json: string;
}
const rendered = new WeakMap<object, Rendered>();

/**
 * The status document as JSON text, remembered per process (`key`) until something it shows
 * changes: a listing of 1000 serialises only the documents that changed, and a status request
 * for a process that did not change costs a comparison of its view.
 */
export function statusJson(base: Base, view: ProcessView, key: object): string {
  const last = rendered.get(key);
  if (last && last.http === base.http && last.ws === base.ws && unchanged(last, view)) return last.json;
  const json = JSON.stringify(statusDocument(base, view));
  rendered.set(key, { http: base.http, ws: base.ws, view, keys: Object.keys(view).length, live: view.metrics.live, json });
  return json;
}

export function statusUrl(base: Base, slug: string): string {
  return `${base.http}/process-status/${encodeURIComponent(slug)}`;
}

/** The seed-001 status document plus drover's additions (pid, restarts, errors, ...). */
export function statusDocument(base: Base, p: ProcessView) {
  const slug = encodeURIComponent(p.slug);
  const status = statusUrl(base, p.slug);
  return {
    app: p.app,
    node: p.node,
    process_type: p.processType,
    slug: p.slug,
    state: p.state,
    attach: `${base.ws}/attach-console/${slug}`,
    details: status,
    status,
    delete: `${base.http}/delete-process/${slug}`,
    ...controlLinks(base, slug),
    events: `${base.http}/process-events/${slug}`,
    pid: p.pid,
    pgid: p.pgid,
    // A proc gets no $PORT.
    port: p.procId !== undefined ? null : p.port,
    restarts: p.restarts,
    created_at: p.createdAt.toISOString(),
    started_at: p.state === 'running' && p.startedAt ? p.startedAt.toISOString() : null,
    // Ready: accepts connections on $PORT (when checked), else simply running.
    readiness: p.checksReadiness ? 'port' : 'none',
    ready: p.readyAt !== null,
    ready_at: p.readyAt ? p.readyAt.toISOString() : null,
    release: releaseOf(p),
    // What runs: the Procfile entry (or package.json's `npm start`, or the argv).
    command: p.origin?.command ?? null,
    command_from: p.origin?.from ?? null,
    errors: p.errors,
    // Names only: values often hold secrets.
    env_names: Object.keys(p.env),
    source_digest: sourceDigest(p.sourceUrl),
    env_digest: envDigest(p.env),
    stopped: p.stopped,
    restart_policy: {
      policy: p.restart.policy,
      delay_ms: p.restart.delayMs,
      max_delay_ms: p.restart.maxDelayMs,
      reset_after_ms: p.restart.resetAfterMs,
    },
    last_exit: exitDetail(p.lastExit),
    usage: liveDetail(p.metrics.live),
    // A proc of the Procstar API: its id there and its RESULT.
    ...(p.procId !== undefined ? { proc_id: p.procId, proc: `${base.http}/procs/${encodeURIComponent(p.procId)}` } : {}),
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
    replace: `${base.http}/replace-process/${slug}`,
  };
}

/** Which release runs: the archive's short content hash and where it came from (credentials and query cut). */
export function releaseOf(p: Pick<ProcessView, 'archive' | 'sourceUrl'>): { id: string | null; source: string } {
  return { id: p.archive ? p.archive.slice(0, 12) : null, source: redactUrl(p.sourceUrl) };
}
