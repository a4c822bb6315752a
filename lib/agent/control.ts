// Signal, stop, start and restart of one supervised process: checks that the request makes
// sense in the process's state (ConflictError otherwise), sends the machine its event and
// waits until the effect is visible, so the caller's answer shows the new state.
import type { StopOptions } from '../process/machine.js';
import { signalGroup } from '../os/proc.js';
import type { SignalId } from '../os/signals.js';
import { ConflictError, type ManagedProcess } from './supervisor.js';

type Snapshot = ReturnType<ManagedProcess['actor']['getSnapshot']>;

function snapshot(proc: ManagedProcess): Snapshot {
  const snap = proc.actor.getSnapshot();
  if (snap.status === 'done' || snap.context.deleting) throw new ConflictError(`process "${proc.slug}" is being deleted`);
  return snap;
}

/** Resolves once the actor's snapshot satisfies `ok` (checked at once, then on every change). */
function until(proc: ManagedProcess, ok: (s: Snapshot) => boolean): Promise<void> {
  return new Promise((resolve) => {
    if (ok(proc.actor.getSnapshot())) return resolve();
    const sub = proc.actor.subscribe({
      next: (s) => {
        if (ok(s) || s.status === 'done') {
          sub.unsubscribe();
          resolve();
        }
      },
      complete: () => resolve(),
    });
  });
}

/** Sends a signal to the running child's whole process group. */
export function signalProcess(proc: ManagedProcess, signal: SignalId): void {
  const snap = snapshot(proc);
  const pgid = snap.context.pgid;
  if (snap.value !== 'running' || pgid === null)
    throw new ConflictError(`process "${proc.slug}" has no running child (state ${snap.value})`);
  if (!signalGroup(pgid, signal.number)) throw new ConflictError(`process "${proc.slug}" has no running child (it just exited)`);
}

/** Stops gracefully and keeps the process in `exited` until start; resolves once the child is gone. */
export async function stopProcess(proc: ManagedProcess, opts: StopOptions): Promise<void> {
  snapshot(proc);
  proc.actor.send({ type: 'STOP', ...opts });
  await until(proc, (s) => s.value !== 'running');
}

/** Starts a process that is `exited` (stopped, or finished under its restart policy). */
export async function startProcess(proc: ManagedProcess): Promise<void> {
  const snap = snapshot(proc);
  if (snap.value !== 'exited') {
    throw new ConflictError(
      snap.value === 'running'
        ? `process "${proc.slug}" is already running`
        : `process "${proc.slug}" is already starting (state ${snap.value})`,
    );
  }
  proc.actor.send({ type: 'START' });
}

/** Graceful stop, then a new child at once (no backoff); resolves once the process moved on. */
export async function restartProcess(proc: ManagedProcess, opts: StopOptions): Promise<void> {
  const snap = snapshot(proc);
  if (!['running', 'exited', 'restarting'].includes(snap.value)) {
    throw new ConflictError(`process "${proc.slug}" has not started yet (state ${snap.value}); nothing to restart`);
  }
  const restarts = snap.context.restarts;
  // A restart asks for a fresh attempt: a build remembered as failing runs once more.
  if (snap.context.launch === null) proc.forceRebuild = true;
  proc.actor.send({ type: 'RESTART', ...opts });
  // Counted on entering `restarting` (or already, when it was there): wait for what follows.
  await until(
    proc,
    (s) => (s.context.restarts > restarts || snap.value === 'restarting') && s.value !== 'exited' && s.value !== 'restarting',
  );
}
