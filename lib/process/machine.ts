import { assign, fromCallback, fromPromise, sendTo, setup } from 'xstate';
import { backoffDelay, effectiveAttempt, type BackoffPolicy } from './backoff.js';
import type { ExitInfo } from './child.js';

/** What the machine needs from the outside world; the supervisor provides real ones, tests fakes. */
export interface ProcessDeps {
  /** Downloads (or reuses) the source archive. */
  download(signal: AbortSignal): Promise<unknown>;
  /** Unpacks and builds the archive, resolves the Procfile entry: everything needed to start. */
  build(archive: unknown, signal: AbortSignal): Promise<unknown>;
  /** Starts the command; returns a handle the machine can stop. */
  start(launch: unknown): ChildHandle;
  backoff: BackoffPolicy;
  stopGraceMs: number;
}

export interface ChildHandle {
  readonly pid: number | undefined;
  readonly exited: Promise<ExitInfo>;
  stop(graceMs: number): Promise<void>;
}

export interface ProcessContext {
  deps: ProcessDeps;
  archive: unknown;
  launch: unknown;
  pid: number | null;
  /** Number of times the process was restarted (every pass through `restarting`). */
  restarts: number;
  /** Consecutive failures, for the backoff. */
  attempt: number;
  /** Delay chosen on entering `restarting`. */
  restartDelayMs: number;
  /** How long the last child ran, null when the last attempt failed before running. */
  lastRunMs: number | null;
  lastExit: ExitInfo | null;
  errors: string[];
  maxErrors: number;
  /** Set when a delete arrived while a child runs: `deleted` follows its exit. */
  deleting: boolean;
}

export type ProcessEvent =
  | { type: 'START' }
  | { type: 'DELETE' }
  | { type: 'CHILD.STARTED'; pid: number | null }
  | { type: 'CHILD.EXITED'; exit: ExitInfo };

export const STATES = ['pending', 'downloading', 'building', 'running', 'exited', 'restarting', 'deleted'] as const;
export type ProcessState = (typeof STATES)[number];

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function describeExit(exit: ExitInfo): string | null {
  if (exit.error) return exit.error;
  if (exit.signal) return `process was killed by ${exit.signal}`;
  if (exit.code) return `process exited with code ${exit.code}`;
  return null;
}

function addError(ctx: ProcessContext, error: string | null): string[] {
  if (!error) return ctx.errors;
  return [...ctx.errors, error].slice(-ctx.maxErrors);
}

/**
 * Child control as an invoked actor: starting the actor starts the child, a STOP event stops
 * it gracefully, and stopping the actor (leaving `running` any other way) stops the child too.
 */
const childActor = fromCallback<{ type: 'STOP' }, { deps: ProcessDeps; launch: unknown }>(({ input, sendBack, receive }) => {
  const child = input.deps.start(input.launch);
  let done = false;
  sendBack({ type: 'CHILD.STARTED', pid: child.pid ?? null });
  child.exited.then((exit) => {
    done = true;
    sendBack({ type: 'CHILD.EXITED', exit });
  });
  receive(() => void child.stop(input.deps.stopGraceMs));
  return () => {
    if (!done) void child.stop(input.deps.stopGraceMs);
  };
});

export const processMachine = setup({
  types: {
    context: {} as ProcessContext,
    events: {} as ProcessEvent,
    input: {} as { deps: ProcessDeps; maxErrors?: number },
  },
  actors: {
    download: fromPromise<unknown, { deps: ProcessDeps }>(({ input, signal }) => input.deps.download(signal)),
    build: fromPromise<unknown, { deps: ProcessDeps; archive: unknown }>(({ input, signal }) =>
      input.deps.build(input.archive, signal),
    ),
    child: childActor,
  },
  delays: {
    backoff: ({ context }) => context.restartDelayMs,
  },
  guards: {
    deleting: ({ context }) => context.deleting,
    hasLaunch: ({ context }) => context.launch !== null,
  },
}).createMachine({
  id: 'process',
  initial: 'pending',
  context: ({ input }) => ({
    deps: input.deps,
    archive: null,
    launch: null,
    pid: null,
    restarts: 0,
    attempt: 0,
    restartDelayMs: 0,
    lastRunMs: null,
    lastExit: null,
    errors: [],
    maxErrors: input.maxErrors ?? 20,
    deleting: false,
  }),
  // Deletion is accepted in every state; leaving a state stops what it invoked (aborting a
  // download or build through its AbortSignal). `running` handles it itself, to wait for the child.
  on: { DELETE: '.deleted' },
  states: {
    pending: {
      on: { START: 'downloading' },
    },
    downloading: {
      invoke: {
        src: 'download',
        input: ({ context }) => ({ deps: context.deps }),
        onDone: { target: 'building', actions: assign({ archive: ({ event }) => event.output }) },
        onError: {
          target: 'restarting',
          actions: assign({ errors: ({ context, event }) => addError(context, message(event.error)), lastRunMs: null }),
        },
      },
    },
    building: {
      invoke: {
        src: 'build',
        input: ({ context }) => ({ deps: context.deps, archive: context.archive }),
        onDone: { target: 'running', actions: assign({ launch: ({ event }) => event.output }) },
        onError: {
          target: 'restarting',
          actions: assign({ errors: ({ context, event }) => addError(context, message(event.error)), lastRunMs: null }),
        },
      },
    },
    running: {
      invoke: {
        id: 'child',
        src: 'child',
        input: ({ context }) => ({ deps: context.deps, launch: context.launch }),
      },
      on: {
        'CHILD.STARTED': { actions: assign({ pid: ({ event }) => event.pid }) },
        'CHILD.EXITED': [
          { guard: 'deleting', target: 'deleted', actions: assign({ pid: null, lastExit: ({ event }) => event.exit }) },
          {
            target: 'exited',
            actions: assign({
              pid: null,
              lastExit: ({ event }) => event.exit,
              lastRunMs: ({ event }) => event.exit.endedAt - event.exit.startedAt,
              errors: ({ context, event }) => addError(context, describeExit(event.exit)),
            }),
          },
        ],
        DELETE: { actions: [assign({ deleting: true }), sendTo('child', { type: 'STOP' })] },
      },
    },
    exited: {
      // A real (zero-delay) timer instead of `always`, so observers see `exited` as its own step.
      after: { 0: 'restarting' },
    },
    restarting: {
      entry: assign(({ context }) => {
        const attempt = effectiveAttempt(context.attempt, context.lastRunMs, context.deps.backoff);
        return {
          restarts: context.restarts + 1,
          restartDelayMs: backoffDelay(attempt, context.deps.backoff),
          attempt: attempt + 1,
        };
      }),
      after: {
        backoff: [{ guard: 'hasLaunch', target: 'running' }, { target: 'downloading' }],
      },
    },
    deleted: { type: 'final' },
  },
});
