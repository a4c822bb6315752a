// Process control and metrics: POST /signal-process, /stop-process, /start-process,
// /restart-process (JSON body, answer: the updated status document) and GET /process-metrics.
import type { H3, H3Event } from 'h3';
import { restartProcess, signalProcess, startProcess, stopProcess } from '../agent/control.js';
import { liveDetail } from '../process/exit.js';
import type { StopOptions } from '../process/machine.js';
import type { StageTotals } from '../process/metrics.js';
import { parseSignal, type SignalId } from '../os/signals.js';
import { ConflictError, type ManagedProcess, type Supervisor } from '../agent/supervisor.js';
import { usageDocument } from '../os/usage.js';
import { readJson } from './body.js';
import { ApiError } from './errors.js';
import { statusDocument, statusUrl, type Base } from '../api/links.js';

export interface ControlRoutesOptions {
  supervisor: Supervisor;
  base: (event: H3Event) => Base;
  findProcess: (event: H3Event) => ManagedProcess;
  maxBody: number;
}

// An hour: a longer grace is more likely a unit mistake than a wish.
const MAX_GRACE_MS = 60 * 60 * 1000;

function bad(field: string, detail: string): never {
  throw new ApiError(400, `${field}: ${detail}`, field);
}

/** The body as an object of known fields; an absent or empty body is `{}` where that is allowed. */
async function body(event: H3Event, maxBody: number, allowed: string[], optional: boolean): Promise<Record<string, unknown>> {
  const b = await readJson(event, maxBody, { optional });
  if (b === undefined) return {};
  if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new ApiError(400, 'request body must be a JSON object');
  for (const k of Object.keys(b)) {
    if (!allowed.includes(k)) bad(k.slice(0, 40), allowed.length ? `is not accepted here; use ${allowed.join(', ')}` : 'is not accepted here; send {}');
  }
  return b as Record<string, unknown>;
}

function signalField(value: unknown, required: boolean): SignalId | undefined {
  if (value === undefined && !required) return undefined;
  if (value === undefined || value === null) bad('signal', 'is required, e.g. "SIGHUP" or 1');
  const sig = parseSignal(value);
  if (!sig) bad('signal', `${JSON.stringify(value).slice(0, 40)} is not a signal; use a name like "SIGHUP" or a number from 1 to 64`);
  return sig;
}

function stopOptions(b: Record<string, unknown>): StopOptions {
  const signal = signalField(b.signal, false);
  const g = b.grace_ms;
  if (g !== undefined && (typeof g !== 'number' || !Number.isInteger(g) || g < 0 || g > MAX_GRACE_MS)) {
    bad('grace_ms', `must be an integer number of milliseconds from 0 to ${MAX_GRACE_MS}, got ${JSON.stringify(g)?.slice(0, 40)}`);
  }
  return { ...(signal ? { signal: signal.number } : {}), ...(g !== undefined ? { graceMs: g as number } : {}) };
}

async function conflictsAs409<T>(work: () => Promise<T> | T): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof ConflictError) throw new ApiError(409, err.message, 'slug');
    throw err;
  }
}

function stageDocument(s: StageTotals) {
  return { runs: s.runs, measured: s.measured, total: usageDocument(s.total), last: usageDocument(s.last) };
}

/** Totals per stage (every run so far, and the last), the current sample and recent ones. */
export function metricsDocument(base: Base, proc: ManagedProcess, sampleIntervalMs: number) {
  const m = proc.metrics;
  return {
    slug: proc.slug,
    status: statusUrl(base, proc.slug),
    build: stageDocument(m.build),
    run: stageDocument(m.run),
    current: liveDetail(m.live),
    sample_interval_ms: sampleIntervalMs,
    samples: m.samples.map((u) => ({ at: new Date(u.at).toISOString(), cpu_percent: u.cpuPercent, rss: u.rss, processes: u.processes })),
  };
}

export function registerControlRoutes(app: H3, { supervisor, base, findProcess, maxBody }: ControlRoutesOptions): void {
  app.post('/signal-process/:slug', async (event) => {
    const proc = findProcess(event);
    const sig = signalField((await body(event, maxBody, ['signal'], false)).signal, true)!;
    await conflictsAs409(() => signalProcess(proc, sig));
    return statusDocument(base(event), proc);
  });

  app.post('/stop-process/:slug', async (event) => {
    const proc = findProcess(event);
    const opts = stopOptions(await body(event, maxBody, ['signal', 'grace_ms'], true));
    await conflictsAs409(() => stopProcess(proc, opts));
    await proc.saved(); // so it stays stopped across an agent restart
    return statusDocument(base(event), proc);
  });

  app.post('/start-process/:slug', async (event) => {
    const proc = findProcess(event);
    await body(event, maxBody, [], true);
    await conflictsAs409(() => startProcess(proc));
    await proc.saved();
    return statusDocument(base(event), proc);
  });

  app.post('/restart-process/:slug', async (event) => {
    const proc = findProcess(event);
    const opts = stopOptions(await body(event, maxBody, ['signal', 'grace_ms'], true));
    await conflictsAs409(() => restartProcess(proc, opts));
    return statusDocument(base(event), proc);
  });

  app.get('/process-metrics/:slug', (event) => metricsDocument(base(event), findProcess(event), supervisor.sampler.intervalMs));
}
