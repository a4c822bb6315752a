import { assign, fromCallback, fromPromise, sendTo, setup } from 'xstate';
import { backoffDelay, effectiveAttempt, type BackoffPolicy } from './backoff.js';
import type { ExitInfo } from '../os/child.js';
import { shouldRestart, type RestartPolicy } from './policy.js';
import { exitError, message } from './wording.js';

/**
 * What the machine needs from the outside world; the supervisor provides real ones, tests fakes.
 * The machine only hands `Archive` from download to build and `Launch` from build to start.
 */
export interface ProcessDeps<Archive = unknown, Launch = unknown> {
  /** Downloads (or reuses) the source archive. */
  download(signal: AbortSignal): Promise<Archive>;
  /** Unpacks and builds the archive, resolves the process's spec: everything needed to start. */
  build(archive: Archive, signal: AbortSignal): Promise<Launch>;
  /** Starts the command; returns a handle the machine can stop. */
  start(launch: Launch): ChildHandle;
  backoff: BackoffPolicy;
  stopGraceMs: number;
  /** A run shorter than this is an error even with exit code 0 (when the policy restarts it); 0 or absent: off. */
  minUptimeMs?: number;
}

export interface ChildHandle {
  /** The process group (its leader's pid); with a spawn helper, known once `appPid` resolves. */
  readonly pid: number | undefined;
  /** The app's own pid when it differs from the group leader (an exit helper leads the group); resolves once known. */
  readonly appPid?: Promise<number | null>;
  readonly exited: Promise<ExitInfo>;
  stop(graceMs: number, signal?: NodeJS.Signals | number): Promise<void>;
}

/** How a graceful stop goes: this signal first, then SIGTERM and SIGKILL after the grace. */
export interface StopOptions {
  signal?: NodeJS.Signals | number;
  graceMs?: number;
}

export interface ProcessContext {
  deps: ProcessDeps;
  archive: unknown;
  launch: unknown;
  /** The app's pid (what `kill PID` should reach). */
  pid: number | null;
  /** The child's process group: what drover signals. */
  pgid: number | null;
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
  /** Retry failed downloads and builds with backoff (processes); false: rest in `exited` (runs, which run once). */
  retryFailures: boolean;
  policy: RestartPolicy;
  /** Stopped on request: stays `exited` until START (or RESTART). */
  stopped: boolean;
  /** The running child is being stopped on request: its exit is no error. */
  stopping: boolean;
  /** A RESTART is under way: the next pass through `restarting` has no delay. */
  restartNow: boolean;
  /** The running child is being stopped because it never became ready: its run counts as a failure. */
  unready: boolean;
  /** A child a REPLACE started already (start-first): the next `running` adopts it instead of starting one. */
  adopt: ChildHandle | null;
}

export type ProcessEvent =
  // `reason` is not used by the machine; it tells observers (the event log) why.
  | { type: 'START'; reason?: string }
  | ({ type: 'STOP'; reason?: string } & StopOptions)
  | ({ type: 'RESTART' } & StopOptions)
  | { type: 'DELETE'; reason?: string }
  /** A new release is built (and, start-first, its child already runs): swap to it, same actor. */
  | { type: 'REPLACE'; launch: unknown; child?: ChildHandle; reason?: string }
  /** The child did not become ready in time: stopped, counted as a failure, restarted with backoff. */
  | { type: 'CHILD.UNREADY'; error: string }
  | { type: 'CHILD.STARTED'; pid: number | null; pgid: number | null }
  | { type: 'CHILD.EXITED'; exit: ExitInfo };

export const STATES = ['pending', 'downloading', 'building', 'running', 'exited', 'restarting', 'deleted'] as const;
export type ProcessState = (typeof STATES)[number];

/** Longest error entry kept, in characters: a hostile input must not make every retry log kilobytes. */
export const MAX_ERROR_LENGTH = 1024;

/** An error entry cut to MAX_ERROR_LENGTH, ending with an ellipsis and how much was cut. */
export function capError(error: string): string {
  if (error.length <= MAX_ERROR_LENGTH) return error;
  const note = (cut: number) => `… (${cut} more characters)`;
  // The note's own length depends on the count; two passes settle it.
  let keep = MAX_ERROR_LENGTH - note(error.length).length;
  keep = MAX_ERROR_LENGTH - note(error.length - keep).length;
  return error.slice(0, keep) + note(error.length - keep);
}

function addError(ctx: ProcessContext, error: string | null): string[] {
  if (!error) return ctx.errors;
  return [...ctx.errors, capError(error)].slice(-ctx.maxErrors);
}

/**
 * Child control as an invoked actor: starting the actor starts the child, a STOP event stops
 * it gracefully, and stopping the actor (leaving `running` any other way) stops the child too.
 */
const childActor = fromCallback<{ type: 'STOP' } & StopOptions, { deps: ProcessDeps; launch: unknown; adopt: ChildHandle | null }>(
  ({ input, sendBack, receive }) => {
    let child: ChildHandle;
    try {
      // A child a start-first REPLACE already started (and saw ready) is adopted, not started again.
      child = input.adopt ?? input.deps.start(input.launch);
    } catch (err) {
      // Whatever fails to start a child is this process's error (retried with backoff), never
      // the agent's: an exception escaping here would end the whole agent.
      const at = Date.now();
      const exit: ExitInfo = { code: null, signal: null, signum: null, coreDump: null, startedAt: at, endedAt: at, usage: null };
      sendBack({ type: 'CHILD.STARTED', pid: null });
      void Promise.resolve().then(() => sendBack({ type: 'CHILD.EXITED', exit: { ...exit, error: `cannot start: ${message(err)}` } }));
      return () => {};
    }
    let done = false;
    // With an exit helper leading the group, the app's own pid comes a moment later, and with
    // the spawn helper the group's too: `pid` is only ever the app's. STARTED always precedes EXITED.
    const started = child.appPid
      ? child.appPid.then((pid) => sendBack({ type: 'CHILD.STARTED', pid: pid ?? child.pid ?? null, pgid: child.pid ?? null }))
      : Promise.resolve(sendBack({ type: 'CHILD.STARTED', pid: child.pid ?? null, pgid: child.pid ?? null }));
    void Promise.all([started, child.exited]).then(([, exit]) => {
      done = true;
      sendBack({ type: 'CHILD.EXITED', exit });
    });
    receive((e) => void child.stop(e.graceMs ?? input.deps.stopGraceMs, e.signal));
    return () => {
      if (!done) void child.stop(input.deps.stopGraceMs);
    };
  },
);

export const processMachine = setup({
  types: {
    context: {} as ProcessContext,
    events: {} as ProcessEvent,
    input: {} as { deps: ProcessDeps; maxErrors?: number; policy?: RestartPolicy; restarts?: number; retryFailures?: boolean },
  },
  actors: {
    download: fromPromise<unknown, { deps: ProcessDeps }>(({ input, signal }) => input.deps.download(signal)),
    build: fromPromise<unknown, { deps: ProcessDeps; archive: unknown }>(({ input, signal }) => input.deps.build(input.archive, signal)),
    child: childActor,
  },
  delays: {
    backoff: ({ context }) => context.restartDelayMs,
  },
  guards: {
    deleting: ({ context }) => context.deleting,
    retriesFailures: ({ context }) => context.retryFailures,
    hasLaunch: ({ context }) => context.launch !== null,
    shouldRestart: ({ context }) => shouldRestart(context),
  },
  actions: {
    /** Back from a stop (or a finished run): clear the flag, start the backoff afresh. */
    resume: assign({ stopped: false, attempt: 0 }),
    /** Takes the new release (and a child already started for it) for the next `running`. */
    takeRelease: assign(({ event }) => {
      const e = event as { launch: unknown; child?: ChildHandle };
      return { launch: e.launch, adopt: e.child ?? null, stopped: false, attempt: 0 };
    }),
    stopChild: sendTo('child', ({ event }) => {
      const e = event as { signal?: NodeJS.Signals | number; graceMs?: number };
      return { type: 'STOP' as const, signal: e.signal, graceMs: e.graceMs };
    }),
  },
}).createMachine({
  id: 'process',
  initial: 'pending',
  context: ({ input }) => ({
    deps: input.deps,
    archive: null,
    launch: null,
    pid: null,
    pgid: null,
    // Carried over from the previous agent: restarts are not reset by an agent restart.
    restarts: input.restarts ?? 0,
    attempt: 0,
    restartDelayMs: 0,
    lastRunMs: null,
    lastExit: null,
    errors: [],
    maxErrors: input.maxErrors ?? 20,
    deleting: false,
    retryFailures: input.retryFailures ?? true,
    policy: input.policy ?? 'always',
    stopped: false,
    stopping: false,
    restartNow: false,
    unready: false,
    adopt: null,
  }),
  // Deletion is accepted in every state; leaving a state stops what it invoked (aborting a
  // download or build through its AbortSignal). `running` handles it itself, to wait for the child.
  on: { DELETE: '.deleted' },
  states: {
    pending: {
      on: {
        START: 'downloading',
        STOP: { target: 'exited', actions: assign({ stopped: true }) },
        REPLACE: { target: 'running', actions: 'takeRelease' },
      },
    },
    downloading: {
      invoke: {
        src: 'download',
        input: ({ context }) => ({ deps: context.deps }),
        onDone: { target: 'building', actions: assign({ archive: ({ event }) => event.output }) },
        onError: [
          {
            guard: 'retriesFailures',
            target: 'restarting',
            actions: assign({ errors: ({ context, event }) => addError(context, message(event.error)), lastRunMs: null }),
          },
          {
            target: 'exited',
            actions: assign({ errors: ({ context, event }) => addError(context, message(event.error)), lastRunMs: null }),
          },
        ],
      },
      // Leaving the state aborts the download through its AbortSignal.
      on: { STOP: { target: 'exited', actions: assign({ stopped: true }) }, REPLACE: { target: 'running', actions: 'takeRelease' } },
    },
    building: {
      invoke: {
        src: 'build',
        input: ({ context }) => ({ deps: context.deps, archive: context.archive }),
        onDone: { target: 'running', actions: assign({ launch: ({ event }) => event.output }) },
        onError: [
          {
            guard: 'retriesFailures',
            target: 'restarting',
            actions: assign({ errors: ({ context, event }) => addError(context, message(event.error)), lastRunMs: null }),
          },
          {
            target: 'exited',
            actions: assign({ errors: ({ context, event }) => addError(context, message(event.error)), lastRunMs: null }),
          },
        ],
      },
      on: { STOP: { target: 'exited', actions: assign({ stopped: true }) }, REPLACE: { target: 'running', actions: 'takeRelease' } },
    },
    running: {
      invoke: {
        id: 'child',
        src: 'child',
        input: ({ context }) => ({ deps: context.deps, launch: context.launch, adopt: context.adopt }),
      },
      on: {
        'CHILD.STARTED': { actions: assign({ pid: ({ event }) => event.pid, pgid: ({ event }) => event.pgid, adopt: null }) },
        'CHILD.EXITED': [
          { guard: 'deleting', target: 'deleted', actions: assign({ pid: null, pgid: null, lastExit: ({ event }) => event.exit }) },
          {
            target: 'exited',
            actions: assign({
              pid: null,
              pgid: null,
              lastExit: ({ event }) => event.exit,
              // A child stopped for never becoming ready failed, however long it ran: no backoff reset.
              lastRunMs: ({ context, event }) => (context.unready ? null : event.exit.endedAt - event.exit.startedAt),
              // An exit we asked for (stop, restart) is no error; last_exit still has its detail. A
              // clean exit is one when it came too soon and the policy restarts it: a crash loop.
              errors: ({ context, event }) =>
                context.stopping
                  ? context.errors
                  : addError(context, exitError(event.exit, context.policy === 'always' ? (context.deps.minUptimeMs ?? 0) : 0)),
              stopping: false,
              unready: false,
            }),
          },
        ],
        DELETE: { actions: [assign({ deleting: true }), sendTo('child', { type: 'STOP' })] },
        STOP: { actions: [assign({ stopped: true, stopping: true, restartNow: false }), 'stopChild'] },
        RESTART: { actions: [assign({ stopped: false, stopping: true, restartNow: true }), 'stopChild'] },
        // Stop the old child gracefully; the pass through `restarting` (no delay) brings up the new release.
        REPLACE: {
          actions: [
            'takeRelease',
            assign({ stopping: true, restartNow: true }),
            sendTo('child', { type: 'STOP' as const, signal: undefined, graceMs: undefined }),
          ],
        },
        'CHILD.UNREADY': {
          actions: [
            assign({ errors: ({ context, event }) => addError(context, event.error), stopping: true, unready: true }),
            sendTo('child', { type: 'STOP' as const, signal: undefined, graceMs: undefined }),
          ],
        },
      },
    },
    exited: {
      // A real (zero-delay) timer instead of `always`, so observers see `exited` as its own
      // step. Stopped processes, and finished ones the policy does not restart, stay here.
      after: { 0: { guard: 'shouldRestart', target: 'restarting' } },
      on: {
        START: [
          { guard: 'hasLaunch', target: 'running', actions: 'resume' },
          { target: 'downloading', actions: 'resume' },
        ],
        RESTART: { target: 'restarting', actions: assign({ stopped: false, restartNow: true }) },
        STOP: { actions: assign({ stopped: true }) },
        // A stopped process takes the new release but stays down until START.
        REPLACE: [
          { guard: ({ context }) => context.stopped, actions: assign({ launch: ({ event }) => event.launch }) },
          { target: 'running', actions: 'takeRelease' },
        ],
      },
    },
    restarting: {
      entry: assign(({ context }) => {
        // A requested restart goes at once and starts the backoff afresh.
        if (context.restartNow) return { restarts: context.restarts + 1, restartDelayMs: 0, attempt: 0, restartNow: false };
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
      on: {
        STOP: { target: 'exited', actions: assign({ stopped: true }) },
        // Already counted on entry: skip the rest of the backoff.
        RESTART: [
          { guard: 'hasLaunch', target: 'running', actions: 'resume' },
          { target: 'downloading', actions: 'resume' },
        ],
        REPLACE: { target: 'running', actions: 'takeRelease' },
      },
    },
    deleted: { type: 'final' },
  },
});
