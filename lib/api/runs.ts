// The documents of the runs API (POST /runs …), in the shape openaustralia/yinyo serves, with
// drover's links. Events are read from the run's drover event log and given yinyo's form.
import type { Run } from '../agent/runs.js';
import type { Base } from './base.js';

export function runUrl(base: Base, id: string): string {
  return `${base.http}/runs/${id}`;
}

/** The state a client sees: the run's lifecycle phase. */
export function runDocument(base: Base, run: Run, position: number | null = null) {
  const self = runUrl(base, run.id);
  const opts = run.options;
  return {
    id: run.id,
    ...(run.name !== undefined ? { name: run.name } : {}),
    state: run.phase,
    stage: run.stage,
    // The queue's word for a started run waiting for a slot, with its place (1 = next).
    status: run.phase === 'queued' ? 'queued' : run.cancelled ? 'cancelled' : run.phase,
    ...(run.phase === 'queued' ? { queue_position: position } : {}),
    ...(opts?.user !== undefined ? { user: opts.user } : {}),
    ...(opts?.priority !== undefined ? { priority: opts.priority } : {}),
    finished: run.finished,
    created_at: run.createdAt.toISOString(),
    started_at: run.startedAt?.toISOString() ?? null,
    finished_at: run.finishedAt?.toISOString() ?? null,
    output: opts?.output ?? [],
    links: {
      self,
      app: `${self}/app`,
      cache: `${self}/cache`,
      start: `${self}/start`,
      events: `${self}/events`,
      exit_data: `${self}/exit-data`,
      output: `${self}/output`,
      files: `${self}/files/`,
      stop: `${self}/stop`,
      cancel: `${self}/cancel`,
      delete: self,
      // The actor's own event log (drover's form), as for processes.
      process_events: `${base.http}/process-events/${encodeURIComponent(run.slug)}`,
    },
  };
}

/** GET /runs/ID/exit-data: what is known so far; each stage appears once it finished. */
export function exitDataDocument(run: Run) {
  return {
    ...(run.exitData.build ? { build: run.exitData.build } : {}),
    ...(run.exitData.execute ? { execute: run.exitData.execute } : {}),
    finished: run.finished,
  };
}

/** The event types a run's stream carries; the rest of the actor's log (state, …) stays drover's. */
const RUN_TYPES = new Set(['first', 'queued', 'start', 'finish', 'network', 'cancelled', 'interrupted', 'callback_attempt', 'last']);

/**
 * One line of the run's drover log as a yinyo event `{id, run_id, time, type, data}`, or null
 * for the actor's own bookkeeping. Output lines become `log` events of their stage. The id is
 * drover's per-log counter, as a string like yinyo's (its clients decode it as one).
 */
export function runEvent(line: string, runId: string): { id: string; run_id: string; time: string; type: string; data: unknown } | null {
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
  const head = { id: String(e.id), run_id: runId, time: String(e.time) };
  if (e.type === 'output') {
    const build = e.stream === 'build';
    return {
      ...head,
      type: 'log',
      data: { stage: build ? 'build' : 'execute', stream: build ? 'stdout' : e.stream, text: e.text },
    };
  }
  if (typeof e.type === 'string' && RUN_TYPES.has(e.type)) return { ...head, type: e.type, data: e.data ?? {} };
  return null;
}
