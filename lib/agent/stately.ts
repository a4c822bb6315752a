import type { StatelyInspectionEvent } from '@statelyai/inspect';
import type { AnyActorRef, AnyEventObject, InspectionEvent, Snapshot } from 'xstate';
import { WebSocket } from 'ws';
import type { RawInspector } from '../process/inspection.js';

export interface StatelyOptions {
  log?: (line: string) => void;
  /** Bytes queued on the socket beyond which events are dropped rather than buffered. */
  maxBufferedBytes?: number;
  /** Events kept while disconnected (oldest dropped), as the library's own adapter does. */
  maxDeferred?: number;
  retryMinMs?: number;
  retryMaxMs?: number;
}

export interface StatelyForwarder {
  inspect: RawInspector;
  /** True while a reconnect is scheduled (for tests: stop() must leave none). */
  readonly retrying: boolean;
  readonly connected: boolean;
  stop(): void;
}

// What a watcher may see of a process: never the child's environment (launch), the archive or the code (deps).
const CONTEXT_KEYS = [
  'pid',
  'restarts',
  'attempt',
  'restartDelayMs',
  'lastRunMs',
  'lastExit',
  'errors',
  'deleting',
  'stopped',
  'stopping',
  'policy',
];
const EVENT_KEYS = ['type', 'pid', 'exit'];

function pick(obj: Record<string, unknown> | undefined, keys: string[]): Record<string, unknown> | undefined {
  if (!obj || typeof obj !== 'object') return undefined;
  const out: Record<string, unknown> = {};
  for (const k of keys) if (k in obj) out[k] = obj[k];
  return out;
}

function redactEvent(event: AnyEventObject): AnyEventObject {
  const out = pick(event, EVENT_KEYS) as AnyEventObject;
  if (event.error !== undefined) out.error = event.error instanceof Error ? event.error.message : String(event.error);
  return out;
}

/** A snapshot reduced to what the Stately inspector draws: status, state value, a redacted context. */
function redactSnapshot(snapshot: Record<string, unknown> | undefined, root: boolean) {
  if (!snapshot) return { status: 'active' };
  return {
    status: snapshot.status,
    ...(root ? { value: snapshot.value, context: pick(snapshot.context as Record<string, unknown>, CONTEXT_KEYS) } : {}),
    ...(snapshot.error !== undefined ? { error: snapshot.error instanceof Error ? snapshot.error.message : String(snapshot.error) } : {}),
  };
}

/**
 * Reduces XState's raw inspection event before the library converts it: the library would
 * otherwise serialise whole snapshots (the machine object, invoked actors, the child's env).
 */
export function reduceInspectionEvent(ev: InspectionEvent): InspectionEvent | undefined {
  const root = ev.actorRef.sessionId === ev.rootId;
  const ref = ev.actorRef as AnyActorRef;
  switch (ev.type) {
    case '@xstate.event':
      return { ...ev, event: redactEvent(ev.event) };
    case '@xstate.snapshot':
      return {
        ...ev,
        event: redactEvent(ev.event),
        snapshot: redactSnapshot(ev.snapshot as Record<string, unknown>, root) as Snapshot<unknown>,
      };
    case '@xstate.actor': {
      const light = {
        id: ref.id,
        sessionId: ref.sessionId,
        logic: { config: (ref as unknown as { logic?: { config?: unknown } }).logic?.config },
        _parent: ref._parent ? { sessionId: ref._parent.sessionId } : undefined,
        getSnapshot: () => redactSnapshot(ref.getSnapshot() as Record<string, unknown>, root),
      };
      return { ...ev, actorRef: light as unknown as AnyActorRef };
    }
    default:
      return undefined; // microsteps and actions: the Stately inspector ignores them
  }
}

/**
 * The transport to a Stately-style inspector. The library's own WebSocket adapter retries every
 * 5 s forever on a timer that stop() cannot cancel, and buffers without bound while a slow
 * inspector reads: this one uses unref'd timers that stop() clears, backs off, and drops events
 * rather than queue them when the inspector falls behind.
 */
class Transport {
  private ws: WebSocket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private deferred: string[] = [];
  private delay: number;
  private stopped = false;
  private warned = false;
  dropped = 0;

  constructor(
    private readonly url: string,
    private readonly opts: Required<Omit<StatelyOptions, 'log'>> & { log: (line: string) => void },
  ) {
    this.delay = opts.retryMinMs;
  }

  get retrying(): boolean {
    return this.timer !== undefined;
  }

  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  start(): void {
    if (this.stopped || this.ws) return;
    const ws = new WebSocket(this.url, { handshakeTimeout: 10_000 });
    this.ws = ws;
    ws.on('open', () => {
      this.delay = this.opts.retryMinMs;
      if (this.warned) this.opts.log(`drover: connected to the inspector at ${this.url}`);
      this.warned = false;
      // The open socket must not keep the agent alive by itself.
      (ws as unknown as { _socket?: { unref(): void } })._socket?.unref();
      const backlog = this.deferred;
      this.deferred = [];
      for (const text of backlog) this.send(text);
    });
    ws.on('message', () => {});
    ws.on('error', (err) => {
      if (!this.warned)
        this.opts.log(
          `drover: inspector at ${this.url} unreachable (${(err as NodeJS.ErrnoException).code ?? err.message}); retrying in the background`,
        );
      this.warned = true;
    });
    ws.on('close', () => {
      this.ws = undefined;
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.start();
      }, this.delay);
      this.timer.unref();
      this.delay = Math.min(this.delay * 2, this.opts.retryMaxMs);
    });
  }

  send(event: StatelyInspectionEvent | string): void {
    if (this.stopped) return;
    let text: string;
    try {
      text = typeof event === 'string' ? event : JSON.stringify(event);
    } catch {
      return; // not serialisable: nothing a watcher could use
    }
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      if (ws.bufferedAmount > this.opts.maxBufferedBytes) this.dropped++;
      else ws.send(text);
      return;
    }
    this.deferred.push(text);
    if (this.deferred.length > this.opts.maxDeferred) this.deferred.shift();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.deferred = [];
    this.ws?.terminate();
    this.ws = undefined;
  }
}

/** Forwards raw inspection events to a Stately-style inspector listening at `url` (ws:// or wss://). */
export async function forwardToStately(url: string, options: StatelyOptions = {}): Promise<StatelyForwarder> {
  // Loaded only when asked for: the inspector client and its dependencies are megabytes of an idle agent's memory.
  const { createInspector } = await import('@statelyai/inspect');
  const transport = new Transport(url, {
    log: options.log ?? (() => {}),
    maxBufferedBytes: options.maxBufferedBytes ?? 4 * 1024 * 1024,
    maxDeferred: options.maxDeferred ?? 200,
    retryMinMs: options.retryMinMs ?? 1000,
    retryMaxMs: options.retryMaxMs ?? 30_000,
  });
  const inspector = createInspector(transport, { autoStart: false });
  inspector.start();
  return {
    inspect(ev) {
      const reduced = reduceInspectionEvent(ev);
      if (reduced) inspector.inspect.next?.(reduced);
    },
    get retrying() {
      return transport.retrying;
    },
    get connected() {
      return transport.connected;
    },
    stop() {
      inspector.stop();
    },
  };
}
