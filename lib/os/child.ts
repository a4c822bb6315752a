import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { asUser, type RunAs } from './identity.js';
import { constants } from 'node:os';
import type { RunCgroup } from './cgroup.js';
import { closeOpened, type MemoryCaptures, type PreparedFds } from './fds.js';
import { LineSplitter } from './lines.js';
import { groupHasLiveMembers, liveGroupMembers, sharedProcessList, signalGroup, signalProcess, type ProcEntry } from './proc.js';
import type { WatchOptions } from './sampler.js';
import { decodeWaitStatus, mayDumpCore } from './signals.js';
import { combineFigures, SampleTracker } from './meter.js';
import type { LiveUsage, RunUsage } from './usage.js';
import { parseHelperLine, parsePidLine, type HelperReport } from './wait-helper.js';
import type { Rlimits, SpawnHelper } from './spawn-helper.js';
import type { Readable } from 'node:stream';

export type OutputStream = 'stdout' | 'stderr';

/** What a child needs of a sampler (the /proc one, or the portable one): live usage of its group. */
export interface GroupSampler {
  watch(pgid: number, opts: WatchOptions, onSample: (u: LiveUsage) => void): () => void;
}

/**
 * What to run: a command line for /bin/sh (a Procfile entry: pipes, `&&`, variables), or an
 * argv whose first word is executed as given, with its arguments never parsed by a shell.
 */
export type ChildCommand = { command: string; argv?: undefined } | { argv: readonly string[]; command?: undefined };

export type ChildSpec = ChildCommand & ChildOptions;

export interface ChildOptions {
  cwd: string;
  env: Record<string, string>;
  onLine: (stream: OutputStream, line: string) => void;
  maxLineLength?: number;
  /** Run as this user instead of the agent's (--user). */
  runAs?: RunAs;
  /** The exit helper (wait-helper.ts): exact exit status with the core-dump flag, and wait4 usage. */
  helper?: string | null;
  /**
   * The resident spawn helper (spawn-helper.ts): it forks, sets up and waits for the child, so
   * the agent neither forks nor needs the wrapper, watchdog or exit helper. Without it (no C
   * compiler, or turned off), the agent spawns the wrapper itself.
   */
  spawner?: SpawnHelper | null;
  /** Resource limits set before the exec. */
  rlimits?: Rlimits | null;
  /** The run's own cgroup: the wrapper moves itself in before the command starts. */
  cgroup?: RunCgroup | null;
  /** Live usage of the group; its samples are also the last resort for the run's totals. */
  sampler?: GroupSampler | null;
  onSample?: (usage: LiveUsage) => void;
  /**
   * Explicit fds (a Procstar spec, see fds.ts) instead of stdout and stderr as line streams:
   * memory captures go to `captures` as bytes; captured stdout and stderr also reach onLine.
   */
  prepared?: PreparedFds;
  captures?: MemoryCaptures;
  /** The file executed instead of argv[0] (argv[0] is then only the name the program sees). */
  exe?: string;
  /** Standard input read from this file instead of /dev/null (a job's input). */
  stdinFile?: string;
  /** Standard output written to this file (created or truncated) instead of lines of output. */
  stdoutFile?: string;
}

export interface ExitInfo {
  code: number | null;
  /** Signal name (SIGSEGV; SIGRTMIN+n for real-time ones) if the process was killed. */
  signal: string | null;
  signum?: number | null;
  /** Whether it dumped core: null where that cannot be known (see exitStatus). */
  coreDump?: boolean | null;
  startedAt: number;
  endedAt: number;
  /** Set when the child could not be started at all. */
  error?: string;
  /** CPU and memory totals of the whole run, with the method behind each figure. */
  usage?: RunUsage | null;
  /** The rest of wait4's rusage of the run, when the exit helper reported it. */
  rusage?: HelperReport['rusage'];
  /** Processes of the run the kernel OOM-killed in its cgroup (set only when some were). */
  oomKills?: number;
}

// Every catchable signal that would end the watchdog (by number: portable across sh
// implementations): signals a caller sends the group must not disarm it.
const WATCHDOG_IGNORES = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 20, 21, 22, 24, 25, 26, 27, 29, 30, 31]
  .concat(Array.from({ length: 31 }, (_v, i) => 34 + i))
  .join(' ');

/**
 * The watchdog: a shell holding fd 3, a socket whose other end only the agent holds. When the
 * agent dies, even by SIGKILL, the read sees EOF and the watchdog kills the whole group (Node
 * has no PR_SET_PDEATHSIG). It ignores the signals a caller may send the group, reports its
 * pid on fd 3 so stop() and the sampler can tell it from the app's processes, and is itself
 * killed with the group.
 */
const WATCHDOG = `echo "watchdog $$" >&3; trap "" ${WATCHDOG_IGNORES}; read -r _ <&3; kill -KILL 0`;

/**
 * The wrapper every command runs in. It starts the watchdog double-forked, so the watchdog is
 * no child of the command's shell (a Procfile `a & b; wait` must not wait for it), joins the
 * run's cgroups (paths in $__DROVER_CGROUPS) before anything of the command runs, and then the
 * command replaces it (`exec`, see shellCommand) with no positional parameters of ours left
 * over. An argv comes after an empty $1: it is exec'd as it is, never parsed.
 *
 * The scripts reach the shells through the environment, never argv, so `ps aux` shows short
 * lines (`/bin/sh -c eval "$__DROVER_WRAPPER" drover exec app`, `drover-watchdog`); the
 * wrapper takes its variables out before anything of the command runs.
 */
function wrapperScript(prelude: readonly string[] = [], watchdogCloses: readonly number[] = []): string {
  const closes = watchdogCloses.map((n) => ` ${n}>&-`).join('');
  return [
    `__drover_cg=$__DROVER_CGROUPS`,
    `__drover_wd=$__DROVER_WATCHDOG`,
    `unset __DROVER_WRAPPER __DROVER_CGROUPS __DROVER_WATCHDOG`,
    `(export __DROVER_WATCHDOG="$__drover_wd"; exec /bin/sh -c 'eval "$__DROVER_WATCHDOG"' drover-watchdog </dev/null >/dev/null 2>&1${closes} &)`,
    `for f in $__drover_cg; do { echo $$ >"$f"; } 2>/dev/null || echo "cgroup-failed $f" >&3; done`,
    `unset __drover_cg __drover_wd`,
    `exec 3<&-`,
    // Explicit fds (fds.ts): only redirections built from validated fd numbers.
    ...prelude,
    `__drover_command=$1`,
    `shift`,
    `[ -n "$__drover_command" ] || exec "$@"`,
    `set --`,
    `eval "$__drover_command"`,
  ].join('\n');
}
const WRAPPER = wrapperScript();
/** The wrapper's whole command line before the command's own words: the script is in the environment. */
const WRAPPER_ARGV = ['/bin/sh', '-c', 'eval "$__DROVER_WRAPPER"', 'drover'];

// Shell syntax, builtins (`exec exit 3` would look for a program called exit) and leading
// assignments cannot follow `exec`.
const notExecable =
  /[;&|\n(){}`<>]|^\s*(if|for|while|until|case|cd|export|set|\.|source|!|:|exit|ulimit|umask|trap|eval|exec|wait|shift|unset|readonly|return|break|continue|alias|times|read|local|type|command|hash|getopts|jobs|fg|bg)(\s|$)|^\s*[A-Za-z_][A-Za-z0-9_]*=/;

/** Prefix `exec` where that keeps the meaning, so the command itself is the process we signal and wait for. */
export function shellCommand(command: string): string {
  return notExecable.test(command) ? command : `exec ${command}`;
}

/** A synchronous spawn failure in words: "spawn E2BIG (argument list or environment too large)". */
export function spawnFailure(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const base = err instanceof Error ? err.message : String(err);
  if (e?.code === 'E2BIG') return `${base} (the environment or command line is larger than the kernel accepts)`;
  return base;
}

/** How long stop() keeps SIGKILLing the command while sparing the helper, so it can report. */
const SPARE_HELPER_MS = 2000;
const MAX_CONTROL_BYTES = 64 * 1024;

/**
 * How a run ended, as exactly as can be known. With the helper: the raw wait status. Without:
 * Node's view (libuv drops the core-dump flag), so `coreDump` is false for exit codes and for
 * signals that never dump core, and null (unknown) for the ones that may.
 */
export function exitStatus(report: HelperReport | null, node: { code: number | null; signal: NodeJS.Signals | null } | null) {
  if (report) return decodeWaitStatus(report.status);
  const code = node?.code ?? null;
  const signal = node?.signal ?? null;
  if (signal)
    return {
      code: null,
      signal,
      signum: (constants.signals as Record<string, number>)[signal] ?? null,
      coreDump: mayDumpCore(signal) ? null : false,
    };
  return { code, signal: null, signum: null, coreDump: code === null ? null : false };
}

/**
 * What to spawn: the wrapper, under the exit helper when there is one, as the --user when
 * set. The wrapper joins the run's cgroups itself (leaving drover's helper and watchdog out of
 * the figures), except for a --user child, which may not: then a first helper joins as root
 * and execs setpriv, which execs the waiting helper as the user; the leader's pid stays the
 * same throughout, and the helpers' tiny share is counted too.
 */
function commandLine(spec: ChildSpec, helper: string | null): [string, string[], Record<string, string>] {
  const script = spec.prepared ? wrapperScript(spec.prepared.prelude, spec.prepared.watchdogCloses) : WRAPPER;
  // $1 of the wrapper, then the argv if there is one.
  const wrapper = spec.argv ? [...WRAPPER_ARGV, '', ...execArgv(spec.argv, spec.exe)] : [...WRAPPER_ARGV, shellCommand(spec.command)];
  const cgroups = spec.cgroup?.procsFiles ?? [];
  const env = (cgroupFiles: readonly string[]) => ({
    ...spec.env,
    __DROVER_WRAPPER: script,
    __DROVER_WATCHDOG: WATCHDOG,
    __DROVER_CGROUPS: cgroupFiles.join(' '),
  });
  if (spec.runAs && helper && cgroups.length > 0) {
    const [setpriv, args] = asUser(spec.runAs, helper, wrapper);
    return [helper, ['--exec', ...cgroups.flatMap((f) => ['--join', f]), setpriv, ...args], env([])];
  }
  const inner = helper ? [helper, ...wrapper] : wrapper;
  return [...asUser(spec.runAs, inner[0], inner.slice(1)), env(cgroups)];
}

/** Runs `exe` as argv[0] says when they differ: dash's exec cannot set argv[0], bash's `exec -a` can. */
export const ARGV0_SHELL = '/bin/bash';

/** What the wrapper execs for an argv: the argv itself, or bash setting argv[0] for another file. */
export function execArgv(argv: readonly string[], exe?: string): string[] {
  if (exe === undefined || exe === argv[0]) return [...argv];
  return [ARGV0_SHELL, '-c', 'f=$1; shift; exec -a "$0" "$f" "$@"', argv[0], exe, ...argv.slice(1)];
}

/**
 * Whether the spawn helper can start this child. It connects stdout and stderr to the agent's
 * stream socket and stdin to /dev/null; explicit fds (a Procstar spec: files the agent opened,
 * dups, captures of any fd) and a job's stdin/stdout files would need the agent's open fds in
 * the child, which the helper cannot receive: those children are spawned directly, as without
 * the helper.
 */
export function helperServes(spec: Pick<ChildSpec, 'prepared' | 'stdinFile' | 'stdoutFile'>): boolean {
  return !spec.prepared && spec.stdinFile === undefined && spec.stdoutFile === undefined;
}

/** A supervised command: its own process group, lines of output, a graceful stop, exact exit detail. */
export class Child {
  /**
   * The process group: its leader's pid (the exit helper's, when there is one). With the spawn
   * helper it is known a moment after the start, when `appPid` resolves.
   */
  get pid(): number | undefined {
    return this.leader;
  }
  private leader: number | undefined;
  /** The leader's start time (clock ticks after boot) when the spawn helper told it. */
  leaderStarttime: number | undefined;
  /** The command's own pid: the leader's, or the one the exit helper reports after forking it; null if it never ran. */
  readonly appPid: Promise<number | null>;
  private reportPid: (pid: number | null) => void = () => {};
  readonly startedAt = Date.now();
  readonly exited: Promise<ExitInfo>;
  /** Null when spawn() itself threw, or the spawn helper runs it. */
  private readonly proc: ChildProcess | null = null;
  private readonly helper: string | null;
  private watchdogPid = 0;
  private exitSeen: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private report: HelperReport | null = null;
  private cgroupFailed = false;
  private readonly samples = new SampleTracker();
  private stopping: Promise<void> | null = null;
  private outputPaused = false;
  /** The pipes the agent reads (stdout and stderr, or a spec's memory captures). */
  private readonly outputs: Readable[] = [];
  private readonly leaderExit: Promise<void>;

  constructor(private readonly spec: ChildSpec) {
    if (spec.argv && (spec.argv.length === 0 || spec.argv[0] === '')) throw new Error('an argv needs a program to run (argv[0])');
    if (spec.spawner && helperServes(spec)) {
      this.helper = null;
      [this.appPid, this.leaderExit, this.exited] = this.viaHelper(spec, spec.spawner);
      return;
    }
    this.helper = spec.helper ?? null;
    const [file, argv, env] = commandLine(spec, this.helper);
    let proc: ChildProcess;
    // Files are opened here and closed once spawn() has handed them to the child.
    const fds: number[] = [];
    try {
      let stdin: 'ignore' | number = 'ignore';
      let stdout: 'pipe' | number = 'pipe';
      if (spec.stdinFile !== undefined) fds.push((stdin = openSync(spec.stdinFile, 'r')));
      if (spec.stdoutFile !== undefined) fds.push((stdout = openSync(spec.stdoutFile, 'w', 0o600)));
      proc = spawn(file, argv, {
        cwd: spec.cwd,
        env,
        detached: true, // own process group, so signals reach the whole tree
        stdio: spec.prepared ? spec.prepared.stdio : [stdin, stdout, 'pipe', 'pipe'],
      });
    } catch (err) {
      if (spec.prepared) closeOpened(spec.prepared);
      for (const fd of fds) closeSync(fd);
      // spawn() throws some failures synchronously (E2BIG, EMFILE, ENOMEM…): they are this
      // run's failure to start, reported through `exited` like ENOENT, never the caller's.
      spec.cgroup?.remove();
      this.leader = undefined;
      this.appPid = Promise.resolve(null);
      this.leaderExit = Promise.resolve();
      const at = Date.now();
      this.exited = Promise.resolve({
        code: null,
        signal: null,
        signum: null,
        coreDump: null,
        startedAt: this.startedAt,
        endedAt: at,
        usage: null,
        error: `cannot start: ${spawnFailure(err)}`,
      });
      return;
    }
    // The child has its own copies now (or never will: an async spawn error).
    if (spec.prepared) closeOpened(spec.prepared);
    for (const fd of fds) closeSync(fd);
    this.proc = proc;
    this.leader = proc.pid;
    this.appPid =
      this.helper && this.pid !== undefined ? new Promise((resolve) => (this.reportPid = resolve)) : Promise.resolve(this.pid ?? null);
    this.leaderExit = new Promise((resolve) => proc.once('exit', () => resolve()));
    // A helper that dies before reporting (or could not fork) leaves the pid unknown.
    void this.leaderExit.then(() => this.reportPid(null));
    const max = spec.maxLineLength ?? 64 * 1024;
    const out = new LineSplitter((l) => spec.onLine('stdout', l), max);
    const err = new LineSplitter((l) => spec.onLine('stderr', l), max);
    if (spec.prepared) {
      for (const [fd, index] of spec.prepared.pipes) {
        const stream = proc.stdio[index] as Readable;
        this.outputs.push(stream);
        const lines = fd === 1 ? out : fd === 2 ? err : null;
        stream.on('data', (c: Buffer) => {
          spec.captures?.push(fd, c);
          lines?.push(c);
        });
        stream.on('error', () => {});
      }
    } else {
      if (proc.stdout) this.outputs.push(proc.stdout);
      this.outputs.push(proc.stderr!);
      proc.stdout?.on('data', (c: Buffer) => out.push(c));
      proc.stderr!.on('data', (c: Buffer) => err.push(c));
    }
    const control = proc.stdio[3] as NodeJS.ReadableStream;
    const lines = new LineSplitter((l) => this.onControl(l), MAX_CONTROL_BYTES);
    control.on('data', (c: Buffer) => lines.push(c));
    control.on('error', () => {});

    const unwatch =
      this.pid !== undefined && spec.sampler
        ? spec.sampler.watch(
            this.pid,
            {
              startedAt: this.startedAt,
              // drover's own: the watchdog, and the helper (only orphans it reaped would be in
              // its times; the run's totals get those from wait4 anyway).
              skip: () => [this.watchdogPid, this.helper ? this.pid! : 0].filter(Boolean),
              covered: () => spec.cgroup != null && !this.cgroupFailed,
            },
            (u) => {
              this.samples.add(u);
              spec.onSample?.(u);
            },
          )
        : () => {};

    this.exited = new Promise((resolve) => {
      let closed = false;
      const finish = (error?: string) => {
        unwatch();
        out.flush();
        err.flush();
        lines.flush();
        resolve(this.ending(error));
      };
      proc.once('error', (e) => {
        if (this.pid === undefined) finish(`cannot start: ${e.message}`);
      });
      proc.once('exit', (code, signal) => {
        this.exitSeen = { code, signal };
        this.pauseOutput(false); // drain what is left in the pipes: the writer is gone, so it is bounded
        // The leader is gone: whatever it left in its group goes too, so a restart never doubles it.
        signalGroup(this.pid!, 'SIGKILL');
        // Stdio closes once every holder died; bound the wait in case one escaped the group.
        const timer = setTimeout(() => {
          if (!closed) {
            for (const s of this.outputs) (s as unknown as { destroy(): void }).destroy();
            (control as unknown as { destroy(): void }).destroy();
          }
        }, 2000);
        timer.unref();
        proc.once('close', async () => {
          closed = true;
          clearTimeout(timer);
          (control as unknown as { destroy(): void }).destroy();
          // A process closes its files before it becomes a zombie: wait out that moment, so
          // `exited` means the whole group is gone and the cgroup figures are final.
          // (One /proc pass shared with every other child exiting meanwhile.)
          const deadline = Date.now() + 2000;
          while (Date.now() < deadline && (await groupHasLiveMembers(this.pid!))) signalGroup(this.pid!, 'SIGKILL');
          finish();
        });
      });
    });
  }

  /** Starts the run through the spawn helper: the same events as a direct spawn, from its replies. */
  private viaHelper(spec: ChildSpec, spawner: SpawnHelper): [Promise<number | null>, Promise<void>, Promise<ExitInfo>] {
    const max = spec.maxLineLength ?? 64 * 1024;
    const splitters = {
      1: new LineSplitter((l) => spec.onLine('stdout', l), max),
      2: new LineSplitter((l) => spec.onLine('stderr', l), max),
    };
    let reportPid: (pid: number | null) => void = () => {};
    const appPid = new Promise<number | null>((r) => (reportPid = r));
    let leaderGone: () => void = () => {};
    const leaderExit = new Promise<void>((r) => (leaderGone = r));
    let unwatch = () => {};
    let closedStreams = 0;
    let streamsClosed: () => void = () => {};
    const allClosed = new Promise<void>((r) => (streamsClosed = r));
    let finished = false;
    let id = 0;
    const exited = new Promise<ExitInfo>((resolve) => {
      const finish = (error?: string) => {
        if (finished) return;
        finished = true;
        spawner.release(id);
        unwatch();
        splitters[1].flush();
        splitters[2].flush();
        resolve(this.ending(error));
      };
      const argv = spec.argv ? execArgv(spec.argv, spec.exe) : ['/bin/sh', '-c', shellCommand(spec.command), 'drover'];
      const runAs = spec.runAs;
      try {
        id = spawner.spawn(
          {
            argv,
            cwd: spec.cwd,
            env: spec.env,
            user: runAs ? { uid: runAs.uid, gid: runAs.gid, groups: runAs.groups } : null,
            rlimits: spec.rlimits,
            cgroupFiles: spec.cgroup?.procsFiles ?? [],
          },
          {
            onPid: (pid, keeper, starttime) => {
              this.leader = pid;
              this.leaderStarttime = starttime;
              reportPid(pid);
              // Each run's keeper is a process of its own: /proc passes need not read it.
              const skip = keeper ? [keeper] : [];
              if (spec.sampler)
                unwatch = spec.sampler.watch(
                  pid,
                  { startedAt: this.startedAt, skip: () => skip, covered: () => spec.cgroup != null && !this.cgroupFailed },
                  (u) => {
                    this.samples.add(u);
                    spec.onSample?.(u);
                  },
                );
            },
            onStream: (fd, s) => {
              if (finished) return void s.destroy();
              this.outputs.push(s);
              s.on('data', (c: Buffer) => splitters[fd].push(c));
              s.once('close', () => {
                if (++closedStreams === 2) streamsClosed();
              });
              if (!this.outputPaused || this.exitSeen) s.resume();
            },
            onCgroupFailed: () => {
              this.cgroupFailed = true;
            },
            onFailed: (why) => {
              this.exitSeen = { code: null, signal: null };
              reportPid(null);
              leaderGone();
              for (const s of this.outputs) s.destroy();
              if (this.leader === undefined) return finish(`cannot start: ${why}`);
              // The helper died under a running child: its keeper kills it; so do we.
              signalGroup(this.leader, 'SIGKILL');
              finish(why);
            },
            onExit: async (report) => {
              this.report = report;
              this.exitSeen = { code: null, signal: null };
              reportPid(null);
              leaderGone();
              this.pauseOutput(false); // drain what is left: the writer is gone, so it is bounded
              // No group kill here: the keeper reports the exit only after it killed the group and
              // reaped everything the run left (it is their subreaper), so the group is gone, and a
              // kill of a gone group costs a thrown exception. Streams close once every holder
              // died; the wait is bounded in case a holder passed its end to another process.
              await within(allClosed, 2000);
              for (const s of this.outputs) s.destroy();
              finish();
            },
          },
        );
      } catch (err) {
        reportPid(null);
        leaderGone();
        finish(`cannot start: ${spawnFailure(err)}`);
      }
    });
    return [appPid, leaderExit, exited];
  }

  get running(): boolean {
    return this.pid !== undefined && this.exitSeen === null;
  }

  /**
   * Stops (or resumes) reading the child's output. A paused child blocks on its next write once
   * the pipe is full, as it would on any slow reader: this is how a slow disk holds it back.
   */
  pauseOutput(paused: boolean): void {
    if (paused && this.exitSeen) return;
    if (paused === this.outputPaused) return;
    this.outputPaused = paused;
    for (const s of this.outputs) {
      if (paused) s.pause();
      else s.resume();
    }
  }

  /** Sends a signal to the whole group (the app and everything it started). */
  signal(sig: NodeJS.Signals | number): boolean {
    return this.pid !== undefined && signalGroup(this.pid, sig);
  }

  /**
   * Graceful stop: `signal` to the group (SIGTERM by default; another one, e.g. SIGUSR1, is
   * followed by SIGTERM after the grace); once the app's processes are gone, or the grace ran
   * out, SIGKILL. Resolves when /proc shows no live member of the group.
   */
  stop(graceMs: number, signal: NodeJS.Signals | number = 'SIGTERM'): Promise<void> {
    this.stopping ??= this.doStop(graceMs, signal);
    return this.stopping;
  }

  private async doStop(graceMs: number, signal: NodeJS.Signals | number): Promise<void> {
    if (this.spec.spawner) await this.appPid; // a stop right after the start waits for the pid
    if (this.pid === undefined) return;
    const pgid = this.pid;
    const n = typeof signal === 'number' ? signal : (constants.signals as Record<string, number>)[signal];
    const steps = n === 9 ? [] : n === 15 ? [signal] : [signal, 'SIGTERM' as const];
    for (const sig of steps) {
      if (!this.running) break;
      this.signal(sig);
      if (await this.appGone(graceMs)) break;
    }
    if (this.running && this.helper) {
      // SIGKILL the app's processes one by one, sparing the helper, so it can still reap the
      // command and report how it ended; a group SIGKILL would take the helper with it.
      const deadline = Date.now() + SPARE_HELPER_MS;
      while (this.running && Date.now() < deadline) {
        for (const p of this.appMembers(await sharedProcessList())) signalProcess(p, 'SIGKILL');
      }
    }
    signalGroup(pgid, 'SIGKILL');
    while (await groupHasLiveMembers(pgid)) signalGroup(pgid, 'SIGKILL');
    await this.exited;
  }

  /** Live members of the group other than drover's own watchdog and helper. */
  private appMembers(all: ProcEntry[]): number[] {
    return liveGroupMembers(this.pid!, all).filter((p) => p !== this.watchdogPid && !(this.helper && p === this.pid));
  }

  /**
   * Whether the app's processes went within `ms`. While the leader runs they have not: wait for
   * its exit (an event, no /proc pass); after it, the shared /proc passes tell.
   */
  private async appGone(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.running) await within(this.leaderExit, deadline - Date.now());
      if (!this.running && this.appMembers(await sharedProcessList()).length === 0) return true;
      if (Date.now() >= deadline) return false;
    }
  }

  /** Lines on fd 3: from the wrapper (`watchdog PID`, `cgroup-failed FILE`), from the helper (`exit ...`). */
  private onControl(line: string): void {
    const [word, rest] = [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)];
    if (word === 'watchdog') this.watchdogPid = Number.parseInt(rest, 10) || this.watchdogPid;
    else if (word === 'cgroup-failed') this.cgroupFailed = true;
    else if (word === 'exit') this.report = parseHelperLine(line) ?? this.report;
    else if (word === 'pid') this.reportPid(parsePidLine(line));
  }

  /** How the run ended, once it has (or `error`: it could not start); its cgroup goes with it. */
  private ending(error?: string): ExitInfo {
    const spec = this.spec;
    const how = error ? { code: null, signal: null, signum: null, coreDump: null } : exitStatus(this.report, this.exitSeen);
    const usage = error ? null : this.usage();
    // Read before the group goes: only it knows whether the kernel OOM-killed inside it.
    const oomKills = spec.cgroup && !this.cgroupFailed ? spec.cgroup.oomKills() : null;
    spec.cgroup?.remove();
    return {
      ...how,
      startedAt: this.startedAt,
      endedAt: Date.now(),
      usage,
      ...(!error && this.report?.rusage ? { rusage: this.report.rusage } : {}),
      ...(oomKills ? { oomKills } : {}),
      ...(error ? { error } : {}),
    };
  }

  /** The run's totals, each figure from the best method that has it (see usage.ts). */
  private usage(): RunUsage | null {
    const cg = this.spec.cgroup && !this.cgroupFailed ? this.spec.cgroup.read() : {};
    return combineFigures(cg, this.report, this.samples.best, this.samples.peakRss);
  }
}

/** Resolves when `p` settles or after `ms`, whichever comes first, leaving no timer behind. */
async function within(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((r) => (timer = setTimeout(r, Math.max(0, ms))))]);
  clearTimeout(timer);
}
