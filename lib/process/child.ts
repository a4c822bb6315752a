import { spawn, type ChildProcess } from 'node:child_process';
import { asUser, type RunAs } from './identity.js';
import { LineSplitter } from './lines.js';
import { liveGroupMembers, signalGroup } from './proc.js';

export type OutputStream = 'stdout' | 'stderr';

export interface ChildSpec {
  command: string;
  cwd: string;
  env: Record<string, string>;
  onLine: (stream: OutputStream, line: string) => void;
  maxLineLength?: number;
  /** Run as this user instead of the agent's (--user). */
  runAs?: RunAs;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  startedAt: number;
  endedAt: number;
  /** Set when the child could not be started at all. */
  error?: string;
}

/**
 * The wrapper every command runs in. A background watchdog holds fd 3, a socket whose other
 * end only the agent holds: when the agent dies, even by SIGKILL, the read sees EOF and the
 * watchdog kills the whole group (Node has no PR_SET_PDEATHSIG). It ignores the signals a
 * caller may send the group, reports its pid on fd 3 so stop() can tell it from the app's
 * processes, and is itself killed with the group. Then the command replaces the shell.
 */
const WRAPPER = [
  `(trap '' HUP INT TERM QUIT USR1 USR2 PIPE ALRM; read -r _ <&3; kill -KILL 0) </dev/null >/dev/null 2>&1 &`,
  `echo $! >&3`,
  `exec 3<&-`,
  `eval "$1"`,
].join('\n');

const notExecable = /[;&|\n(){}`<>]|^\s*(exec|if|for|while|until|case|cd|export|set|\.|source|!)\b/;

/** Prefix `exec` where that keeps the meaning, so the command itself is the process we signal and wait for. */
export function shellCommand(command: string): string {
  return notExecable.test(command) ? command : `exec ${command}`;
}

const POLL_MS = 25;

/** A supervised command: its own process group, lines of output, a graceful stop. */
export class Child {
  readonly pid: number | undefined;
  readonly startedAt = Date.now();
  readonly exited: Promise<ExitInfo>;
  private readonly proc: ChildProcess;
  private watchdogPid = 0;
  private exitSeen: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private stopping: Promise<void> | null = null;

  constructor(spec: ChildSpec) {
    const [file, args] = asUser(spec.runAs, '/bin/sh', ['-c', WRAPPER, 'drover', shellCommand(spec.command)]);
    this.proc = spawn(file, args, {
      cwd: spec.cwd,
      env: spec.env,
      detached: true, // own process group, so signals reach the whole tree
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    this.pid = this.proc.pid;
    const max = spec.maxLineLength ?? 64 * 1024;
    const out = new LineSplitter((l) => spec.onLine('stdout', l), max);
    const err = new LineSplitter((l) => spec.onLine('stderr', l), max);
    this.proc.stdout!.on('data', (c: Buffer) => out.push(c));
    this.proc.stderr!.on('data', (c: Buffer) => err.push(c));
    const control = this.proc.stdio[3] as NodeJS.ReadableStream;
    control.on('data', (c: Buffer) => {
      this.watchdogPid = Number.parseInt(c.toString(), 10) || this.watchdogPid;
    });
    control.on('error', () => {});

    this.exited = new Promise((resolve) => {
      let closed = false;
      const finish = (error?: string) => {
        out.flush();
        err.flush();
        const e = this.exitSeen ?? { code: null, signal: null };
        resolve({ ...e, startedAt: this.startedAt, endedAt: Date.now(), ...(error ? { error } : {}) });
      };
      this.proc.once('error', (e) => {
        if (this.pid === undefined) finish(`cannot start: ${e.message}`);
      });
      this.proc.once('exit', (code, signal) => {
        this.exitSeen = { code, signal };
        // The leader is gone: whatever it left in its group goes too, so a restart never doubles it.
        signalGroup(this.pid!, 'SIGKILL');
        // Stdio closes once every holder died; bound the wait in case one escaped the group.
        const timer = setTimeout(() => {
          if (!closed) {
            this.proc.stdout?.destroy();
            this.proc.stderr?.destroy();
          }
        }, 2000);
        timer.unref();
        this.proc.once('close', () => {
          closed = true;
          clearTimeout(timer);
          (control as unknown as { destroy(): void }).destroy();
          finish();
        });
      });
    });
  }

  get running(): boolean {
    return this.pid !== undefined && this.exitSeen === null;
  }

  /** Sends a signal to the whole group (the app and everything it started). */
  signal(sig: NodeJS.Signals | number): boolean {
    return this.pid !== undefined && signalGroup(this.pid, sig);
  }

  /**
   * SIGTERM to the group; once the app's processes are gone, or the grace ran out, SIGKILL to
   * the group; resolves when /proc shows no live member of the group.
   */
  stop(graceMs: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.stopping ??= this.doStop(graceMs, signal);
    return this.stopping;
  }

  private async doStop(graceMs: number, signal: NodeJS.Signals): Promise<void> {
    if (this.pid === undefined) return;
    const pgid = this.pid;
    if (this.running) {
      this.signal(signal);
      const deadline = Date.now() + graceMs;
      while (Date.now() < deadline) {
        const appLeft = liveGroupMembers(pgid).filter((p) => p !== this.watchdogPid);
        if (appLeft.length === 0 && !this.running) break;
        await delay(POLL_MS);
      }
    }
    signalGroup(pgid, 'SIGKILL');
    while (liveGroupMembers(pgid).length > 0) {
      await delay(POLL_MS);
      signalGroup(pgid, 'SIGKILL');
    }
    await this.exited;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
