// Turns what a process actor does into event-log entries: state transitions with the reason
// (from the event that caused them), child started/exited, errors, scheduled restarts.
import type { AnyActorRef, AnyEventObject, InspectionEvent } from 'xstate';
import type { ExitInfo } from '../os/child.js';
import { diffSnapshots } from './changes.js';
import { exitDetail } from './exit.js';
import type { ProcessContext } from './machine.js';
import { exitText, message } from './wording.js';

export interface LogEntry {
  type: string;
  fields: Record<string, unknown>;
}

/** The part of a machine snapshot the log cares about. */
export interface StepView {
  value: string;
  context: Pick<ProcessContext, 'pid' | 'errors' | 'restartDelayMs' | 'restarts' | 'stopping' | 'restartNow'>;
}

/** Why the machine went from `from` to `to`, in words, from the event that did it. */
export function why(from: string, to: string, event: AnyEventObject, prev: StepView, deleteReason: string): string {
  const t = event.type;
  const reason = typeof event.reason === 'string' ? event.reason : null;
  if (t === 'START') return reason ?? (from === 'pending' ? 'started' : 'start requested');
  if (t === 'STOP') return reason ?? 'stop requested';
  if (t === 'RESTART') return reason ?? (to === 'restarting' ? 'restart requested' : 'restart requested; backoff skipped');
  if (t === 'DELETE') return reason ?? 'delete requested';
  if (t === 'CHILD.EXITED') {
    const text = `the child ${exitText(event.exit as ExitInfo)}`;
    if (to === 'deleted') return `${deleteReason}; ${text}`;
    if (prev.context.stopping) return `${prev.context.restartNow ? 'restart' : 'stop'} requested; ${text}`;
    return text;
  }
  if (t.startsWith('xstate.done.actor.')) {
    if (from === 'downloading') {
      const a = (event.output ?? {}) as { sha256?: string; bytes?: number; reused?: boolean };
      const sha = `sha256 ${String(a.sha256).slice(0, 12)}`;
      return a.reused ? `reused the archive from the cache (${sha})` : `downloaded ${a.bytes} bytes (${sha})`;
    }
    if (from === 'building') {
      const launch = event.output as { command?: string; argv?: string[] } | null;
      return `release ready: ${launch?.command ?? launch?.argv?.join(' ') ?? 'built'}`;
    }
  }
  if (t.startsWith('xstate.error.actor.')) return `${from === 'downloading' ? 'download' : 'build'} failed: ${message(event.error)}`;
  if (t.startsWith('xstate.after.')) {
    if (from === 'exited') return prev.context.restartNow ? 'restart requested' : 'restarting after the exit';
    if (from === 'restarting') {
      const waited = `backoff of ${prev.context.restartDelayMs} ms elapsed`;
      return to === 'downloading' ? `${waited}; no release yet, downloading again` : waited;
    }
  }
  return t;
}

/** The log entries for one machine step (one event processed), in the order they happened. */
export function describeStep(prev: StepView, event: AnyEventObject, next: StepView, port: number, deleteReason: string): LogEntry[] {
  const out: LogEntry[] = [];
  if (event.type === 'CHILD.STARTED') out.push({ type: 'child_started', fields: { pid: event.pid, pgid: event.pgid ?? event.pid, port } });
  if (event.type === 'CHILD.EXITED') out.push({ type: 'child_exited', fields: exitDetail(event.exit as ExitInfo) ?? {} });
  const changed = diffSnapshots(prev, next);
  if (changed.newError !== null) out.push({ type: 'error', fields: { message: changed.newError } });
  if (changed.state) {
    out.push({ type: 'state', fields: { from: prev.value, to: next.value, why: why(prev.value, next.value, event, prev, deleteReason) } });
    if (next.value === 'restarting') {
      out.push({ type: 'restart_scheduled', fields: { delay_ms: next.context.restartDelayMs, restarts: next.context.restarts } });
    }
  }
  return out;
}

/** Anything with an `append` like the event log's. */
export interface Appender {
  append(type: string, fields?: Record<string, unknown>): number;
}

/**
 * Records one process actor's steps. Pass `inspect` to createActor, then call `begin` with the
 * actor before starting it. Microsteps are inspected, so even a state entered and left within
 * one step would be logged.
 */
export class ProcessRecorder {
  private root: AnyActorRef | null = null;
  private prev: StepView | null = null;
  private deleteReason = 'delete requested';

  constructor(
    private readonly log: Appender,
    /** The child's $PORT, or how to read it when it can change (a start-first replace moves it). */
    private readonly port: number | (() => number),
  ) {}

  /** `fields` go into the first entry (the create's request id). */
  begin(actor: AnyActorRef, why: string, fields: Record<string, unknown> = {}): void {
    this.root = actor;
    const snap = actor.getSnapshot() as StepView;
    this.prev = { value: snap.value, context: snap.context };
    this.log.append('state', { from: null, to: snap.value, why, ...fields });
  }

  readonly inspect = (ev: InspectionEvent): void => {
    if (ev.type !== '@xstate.microstep' || ev.actorRef !== this.root || !this.prev) return;
    if (ev.event.type === 'DELETE' && typeof ev.event.reason === 'string') this.deleteReason = ev.event.reason;
    const snap = ev.snapshot as unknown as StepView;
    const next: StepView = { value: snap.value, context: snap.context };
    for (const e of describeStep(this.prev, ev.event, next, typeof this.port === 'number' ? this.port : this.port(), this.deleteReason))
      this.log.append(e.type, e.fields);
    this.prev = next;
  };
}
