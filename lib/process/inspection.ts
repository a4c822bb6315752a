import type { InspectionEvent, StateValue } from 'xstate';
import { diffSnapshots, lastError, type SnapshotView } from './changes.js';

/**
 * What a watcher learns about one process actor: each state it enters, and each change of the
 * context fields a watcher needs (pid, restarts, last error) even when the state stays the same.
 * `from` is null for the actor's first record. `since` is when `to` was entered.
 */
export interface TransitionRecord {
  type: 'transition';
  slug: string;
  from: string | null;
  to: string;
  event: string;
  time: string;
  since: string;
  pid: number | null;
  restarts: number;
  last_error: string | null;
}

/** Where a process is now: the snapshot a stream starts with. */
export type ProcessView = Pick<TransitionRecord, 'slug' | 'since' | 'pid' | 'restarts' | 'last_error'> & { state: string };

export interface InspectionSnapshot {
  type: 'snapshot';
  time: string;
  processes: ProcessView[];
}

/** A fact about `running` that is no state of its own: the child accepts connections on its $PORT. */
export interface ReadyRecord {
  type: 'ready';
  slug: string;
  time: string;
  pid: number | null;
  port: number;
  /** From the child's start to its first accepted connection. */
  after_ms: number;
}

export type InspectionRecord = TransitionRecord | InspectionSnapshot | ReadyRecord;

/** Nested state values become dotted paths ("a.b"); the process machine is flat, so a plain name. */
export function stateName(value: StateValue): string {
  if (typeof value === 'string') return value;
  return Object.entries(value)
    .map(([k, v]) => {
      const inner = v ? stateName(v) : '';
      return inner ? `${k}.${inner}` : k;
    })
    .join(',');
}

/**
 * Turns XState inspection events of one root actor into transition records. Microsteps are used
 * rather than snapshots: a snapshot is only reported at the end of a macrostep, so a state entered
 * and left in the same step (an eventless `always` transition) would never be seen.
 */
export function createTranslator(slug: string, emit: (r: TransitionRecord) => void, now: () => number = Date.now) {
  let last: SnapshotView | null = null;
  let since = '';
  return (ev: InspectionEvent): void => {
    // Invoked actors (download, build, child) share the inspection stream; only the process itself counts.
    if (ev.actorRef.sessionId !== ev.rootId) return;
    const initial = ev.type === '@xstate.snapshot' && ev.event.type === 'xstate.init';
    if (!initial && ev.type !== '@xstate.microstep') return;
    const snap = ev.snapshot as { value?: StateValue; context?: Partial<SnapshotView['context']> };
    if (snap.value === undefined) return;
    const next: SnapshotView = {
      value: stateName(snap.value),
      context: { pid: snap.context?.pid ?? null, restarts: snap.context?.restarts ?? 0, errors: snap.context?.errors ?? [] },
    };
    const changed = diffSnapshots(last, next);
    if (!initial && !changed.any) return;
    const time = new Date(now()).toISOString();
    if (changed.state) since = time;
    const from = last?.value ?? null;
    last = next;
    const to = next.value;
    const ctx = next.context;
    emit({
      type: 'transition',
      slug,
      from,
      to,
      event: ev.event.type,
      time,
      since,
      pid: ctx.pid,
      restarts: ctx.restarts,
      last_error: lastError(ctx.errors),
    });
  };
}

/** A client of the hub. `send` returns how many bytes are still queued for that client. */
export interface InspectionSink {
  /** Only records of this process; all processes when absent. */
  slug?: string;
  send(record: InspectionRecord): number;
  /** The client fell more than the hub's limit behind; it has already been unsubscribed. */
  overflow(): void;
  /** The hub is closing (agent shutdown). */
  close?(): void;
}

export type RawInspector = (ev: InspectionEvent) => void;

/**
 * Fans transition records out to every watcher. Delivery is synchronous and never waits for a
 * client: a client whose queue grows past `maxQueuedBytes` is dropped, so a slow watcher can
 * neither stall the actors nor grow the agent's memory. The latest record of every live
 * process is kept (one per process) for the snapshot a new watcher starts with.
 */
export class InspectionHub {
  private readonly sinks = new Set<InspectionSink>();
  private readonly latest = new Map<string, TransitionRecord>();
  private readonly raw = new Set<RawInspector>();

  constructor(
    private readonly maxQueuedBytes: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** The `inspect` observer for the actor of process `slug`. */
  observer(slug: string): RawInspector {
    const translate = createTranslator(slug, (r) => this.publish(r), this.now);
    return (ev) => {
      translate(ev);
      for (const fn of this.raw) fn(ev);
    };
  }

  /** Also hands every raw inspection event to `fn` (the Stately inspector). */
  forwardRaw(fn: RawInspector): () => void {
    this.raw.add(fn);
    return () => this.raw.delete(fn);
  }

  publish(record: TransitionRecord): void {
    if (record.to === 'deleted') this.latest.delete(record.slug);
    else this.latest.set(record.slug, record);
    for (const sink of this.sinks) {
      if (sink.slug !== undefined && sink.slug !== record.slug) continue;
      this.deliver(sink, record);
    }
  }

  /** A record that changes no state (readiness): delivered to the watchers of that process only. */
  notice(record: ReadyRecord): void {
    for (const sink of this.sinks) {
      if (sink.slug !== undefined && sink.slug !== record.slug) continue;
      this.deliver(sink, record);
    }
  }

  snapshot(slug?: string): InspectionSnapshot {
    const records = slug === undefined ? [...this.latest.values()] : [this.latest.get(slug)].filter((r) => r !== undefined);
    return {
      type: 'snapshot',
      time: new Date(this.now()).toISOString(),
      processes: records.map((r) => ({
        slug: r.slug,
        state: r.to,
        since: r.since,
        pid: r.pid,
        restarts: r.restarts,
        last_error: r.last_error,
      })),
    };
  }

  /** Adds a watcher and sends it the snapshot first. Returns the unsubscribe. */
  subscribe(sink: InspectionSink): () => void {
    this.sinks.add(sink);
    this.deliver(sink, this.snapshot(sink.slug));
    return () => this.sinks.delete(sink);
  }

  get size(): number {
    return this.sinks.size;
  }

  /** Ends every watcher's stream (agent shutdown). */
  close(): void {
    const sinks = [...this.sinks];
    this.sinks.clear();
    for (const s of sinks) s.close?.();
  }

  private deliver(sink: InspectionSink, record: InspectionRecord): void {
    if (!this.sinks.has(sink)) return;
    let queued: number;
    try {
      queued = sink.send(record);
    } catch {
      queued = Infinity; // a client whose stream broke under it: drop it, never the actor that reported
    }
    if (queued > this.maxQueuedBytes) {
      this.sinks.delete(sink);
      sink.overflow();
    }
  }
}
