// systemd's readiness protocol (sd_notify(3)): when systemd starts the agent with
// Type=notify it sets NOTIFY_SOCKET, a Unix datagram socket, and waits for "READY=1".
//
// Node cannot send Unix datagrams, and drover takes no native add-on (the `sd-notify` npm
// package is one, and needs libsystemd headers to install). So the messages go through a
// child process, in order of preference:
//   1. native/build/drover-notify (built by native/build.mjs beside the exit helper): spawned
//      once, fed one message per line, alive as long as the agent;
//   2. systemd-notify(1), once per message, where the helper could not be built.
// Either way the sender is not the main pid: the unit needs NotifyAccess=all
// (examples/systemd/drover.service).
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from './wait-helper.js';

export interface NotifierOptions {
  env?: NodeJS.ProcessEnv;
  /** The helper to use; default native/build/drover-notify of this package. */
  helper?: string | null;
  /** systemd-notify, for when there is no helper; null for none. */
  fallback?: string | null;
  warn?: (line: string) => void;
}

function executable(path: string | null | undefined): string | null {
  if (!path) return null;
  try {
    accessSync(path, constants.X_OK);
    return path;
  } catch {
    return null;
  }
}

function defaultHelper(): string | null {
  const root = packageRoot();
  return root ? join(root, 'native', 'build', 'drover-notify') : null;
}

function findOnPath(name: string, env: NodeJS.ProcessEnv): string | null {
  for (const dir of (env.PATH ?? '/usr/bin:/bin').split(':')) {
    const found = dir && executable(join(dir, name));
    if (found) return found;
  }
  return null;
}

/** One message per line: a newline inside a value (STATUS=) travels as "\n". */
const encode = (message: string) => message.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

export class SystemdNotifier {
  private helper: ChildProcess | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private closed = false;

  private constructor(
    private readonly socket: string,
    private readonly helperPath: string | null,
    private readonly fallback: string | null,
    private readonly watchdogUsec: number,
    private readonly warn: (line: string) => void,
  ) {}

  /**
   * A notifier when the agent runs under systemd with Type=notify (NOTIFY_SOCKET set), else
   * null. Removes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from `env` (process.env by
   * default) so that no child, which inherits the agent's environment, talks to systemd as if
   * it were the agent.
   */
  static fromEnv(opts: NotifierOptions = {}): SystemdNotifier | null {
    const env = opts.env ?? process.env;
    const socket = env.NOTIFY_SOCKET;
    const usec = Number(env.WATCHDOG_USEC);
    const watchdogPid = env.WATCHDOG_PID;
    const path = env.PATH;
    delete env.NOTIFY_SOCKET;
    delete env.WATCHDOG_USEC;
    delete env.WATCHDOG_PID;
    if (!socket) return null;
    const warn = opts.warn ?? (() => {});
    if (!socket.startsWith('/') && !socket.startsWith('@')) {
      warn(`NOTIFY_SOCKET=${socket.slice(0, 100)} is neither a path nor an abstract socket: not notifying systemd`);
      return null;
    }
    const helper = executable(opts.helper === undefined ? defaultHelper() : opts.helper);
    const fallback = opts.fallback === undefined ? findOnPath('systemd-notify', { PATH: path }) : executable(opts.fallback);
    if (!helper && !fallback) {
      warn('NOTIFY_SOCKET is set but neither native/build/drover-notify nor systemd-notify is available: systemd is not told');
      return null;
    }
    // WATCHDOG_PID names the process the watchdog is for; another pid means it is not us.
    const forUs = !watchdogPid || Number(watchdogPid) === process.pid;
    return new SystemdNotifier(socket, helper, fallback, forUs && Number.isInteger(usec) && usec > 0 ? usec : 0, warn);
  }

  /** Restore finished and the API listens. Starts the watchdog pings when systemd asked for them. */
  ready(status?: string): void {
    this.send(`READY=1${status ? `\nSTATUS=${status}` : ''}`);
    if (this.watchdogUsec > 0 && !this.watchdog) {
      const every = Math.max(1, Math.floor(this.watchdogUsec / 2000));
      this.watchdog = setInterval(() => this.send('WATCHDOG=1'), every);
      this.watchdog.unref();
    }
  }

  /** Shutting down: systemd waits for the exit (up to TimeoutStopSec) instead of assuming a crash. */
  stopping(status?: string): void {
    this.stopWatchdog();
    this.send(`STOPPING=1${status ? `\nSTATUS=${status}` : ''}`);
  }

  status(text: string): void {
    this.send(`STATUS=${text}`);
  }

  /** Milliseconds between watchdog pings (0: none). */
  get watchdogIntervalMs(): number {
    return this.watchdogUsec > 0 ? Math.max(1, Math.floor(this.watchdogUsec / 2000)) : 0;
  }

  /** Ends the helper once it has sent everything queued; resolves when it has exited. */
  close(): Promise<void> {
    this.closed = true;
    this.stopWatchdog();
    const h = this.helper;
    this.helper = null;
    if (!h || h.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => h.kill('SIGKILL'), 5000);
      h.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      h.stdin?.end();
    });
  }

  private stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  /** One datagram: the message's fields, one per line (sd_notify's format). */
  private send(message: string): void {
    if (this.closed) return;
    const env = { NOTIFY_SOCKET: this.socket, PATH: process.env.PATH ?? '/usr/bin:/bin' };
    if (this.helperPath) {
      if (!this.helper) {
        const h = spawn(this.helperPath, [], { env, stdio: ['pipe', 'ignore', 'inherit'] });
        h.on('error', (err) => this.warn(`cannot run ${this.helperPath}: ${err.message}`));
        h.stdin.on('error', () => {}); // it exited: reported through 'error' or its stderr
        h.unref();
        (h.stdin as unknown as { unref?: () => void }).unref?.(); // the pipe alone never keeps the agent alive
        this.helper = h;
      }
      this.helper.stdin?.write(`${encode(message)}\n`);
      return;
    }
    // systemd-notify takes each field as an argument.
    const c = spawn(this.fallback!, message.split('\n'), { env, stdio: 'ignore' });
    c.on('error', (err) => this.warn(`cannot run ${this.fallback}: ${err.message}`));
    c.unref();
  }
}
