// Buildpack-like build of an unpacked app: decide the steps from the files present,
// then run each as its own process group so an abort can kill everything it started.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { access, constants, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { asUser, type RunAs } from '../os/identity.js';
import { LineSplitter } from '../os/lines.js';
import type { GroupMeter } from '../os/meter.js';
import { signalGroup } from '../os/proc.js';
import { addUsage, type RunUsage } from '../os/usage.js';
import { abortReason, ReleaseError } from './errors.js';
import { hasScript, readPackageScripts } from './package-json.js';

export interface BuildStep {
  /** Label used in logs and errors, e.g. "npm ci". */
  name: string;
  command: string;
  args: string[];
}

export interface BuildOptions {
  signal?: AbortSignal;
  env: Record<string, string>;
  onLine: (line: string) => void;
  /** Time between SIGTERM and SIGKILL when aborted (default 2000 ms). */
  killGraceMs?: number;
  /** Run the steps as this user instead of the agent's (--user). */
  runAs?: RunAs;
  /** Measures each step's process group (CPU, memory peak). */
  meter?: GroupMeter;
  /** Told about each step's process group when it starts; the returned function when it ends. */
  track?: (pgid: number) => () => void;
}

const DEFAULT_KILL_GRACE_MS = 2000;
// Building needs devDependencies (compilers, bundlers) even when NODE_ENV=production is set for the run.
const QUIET_NPM = ['--no-audit', '--no-fund', '--include=dev'];

export async function detectBuildSteps(appDir: string): Promise<BuildStep[]> {
  const steps: BuildStep[] = [];
  const binBuild = path.join(appDir, 'bin', 'build');
  if ((await isFile(binBuild)) && (await isExecutable(binBuild))) {
    steps.push({ name: 'bin/build', command: binBuild, args: [] });
  }
  if (await isFile(path.join(appDir, 'package.json'))) {
    const locked = (await isFile(path.join(appDir, 'package-lock.json'))) || (await isFile(path.join(appDir, 'npm-shrinkwrap.json')));
    steps.push(
      locked
        ? { name: 'npm ci', command: 'npm', args: ['ci', ...QUIET_NPM] }
        : { name: 'npm install', command: 'npm', args: ['install', ...QUIET_NPM] },
    );
    // Only when there is a build script: no "-----> npm run build" banner for a step that does nothing.
    if (hasScript(await readPackageScripts(appDir).catch(() => ({})), 'build'))
      steps.push({ name: 'npm run build', command: 'npm', args: ['run', 'build'] });
  }
  if (await isFile(path.join(appDir, 'requirements.txt'))) {
    steps.push(
      { name: 'python3 -m venv .venv', command: 'python3', args: ['-m', 'venv', '.venv'] },
      { name: 'pip install', command: path.join(appDir, '.venv', 'bin', 'pip'), args: ['install', '-r', 'requirements.txt'] },
    );
  }
  return steps;
}

/** PATH for building and running the app: its venv and node_modules binaries first. */
export function buildEnvPath(appDir: string, basePath: string): string {
  const dirs = [path.join(appDir, '.venv', 'bin'), path.join(appDir, 'node_modules', '.bin')].filter((d) => existsSync(d));
  // An empty PATH element means "current directory"; never add one.
  return [...dirs, ...basePath.split(path.delimiter).filter((d) => d !== '')].join(path.delimiter);
}

/** Runs every step; resolves with their summed usage (null when nothing ran or was measured). */
export async function runBuild(appDir: string, opts: BuildOptions): Promise<RunUsage | null> {
  let usage: RunUsage | null = null;
  for (const step of await detectBuildSteps(appDir)) {
    opts.signal?.throwIfAborted();
    opts.onLine(`-----> ${step.name}`);
    usage = addUsage(usage, await runStep(appDir, step, opts));
  }
  return usage;
}

function runStep(appDir: string, step: BuildStep, opts: BuildOptions): Promise<RunUsage | null> {
  const { signal } = opts;
  // Recomputed per step: the venv appears only after "python3 -m venv".
  const env = { ...opts.env, PATH: buildEnvPath(appDir, opts.env.PATH ?? process.env.PATH ?? '') };
  return new Promise<RunUsage | null>((resolve, reject) => {
    const [file, args] = asUser(opts.runAs, step.command, step.args);
    const metered = opts.meter?.spawn(file, args);
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(metered?.command ?? file, metered?.args ?? args, {
        cwd: appDir,
        env,
        detached: true,
        stdio: metered?.report ? ['ignore', 'pipe', 'pipe', 'pipe'] : ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      // Thrown synchronously (E2BIG, EMFILE…): the build's failure, never the agent's.
      return reject(new ReleaseError(`build step "${step.name}" could not start: ${(err as Error).message}`));
    }
    metered?.started(child);
    const untrack = child.pid ? opts.track?.(child.pid) : undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const killGroup = (sig: NodeJS.Signals): void => void (child.pid && signalGroup(child.pid, sig));
    const onAbort = (): void => {
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), opts.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
    };
    signal?.addEventListener('abort', onAbort, { once: true });

    const emit = (line: string): void => {
      try {
        opts.onLine(line);
      } catch {
        // a broken log consumer must not break the build
      }
    };
    splitLines(child.stdout!, emit);
    splitLines(child.stderr!, emit);

    // The leader exiting ends the step: stragglers it left in its group would hold
    // our pipes open forever, so they go too.
    child.on('exit', () => killGroup('SIGKILL'));
    child.on('error', (err) => {
      finish();
      reject(signal?.aborted ? abortReason(signal) : new ReleaseError(`build step "${step.name}" could not start: ${err.message}`));
    });
    child.on('close', (code, sig) => {
      finish();
      const usage = metered?.end() ?? null;
      const execError = metered?.execError();
      if (signal?.aborted) reject(abortReason(signal));
      else if (execError) reject(new ReleaseError(`build step "${step.name}" could not start: spawn ${step.command} ${execError}`));
      else if (code === 0) resolve(usage);
      else if (code !== null)
        reject(Object.assign(new ReleaseError(`build step "${step.name}" exited with code ${code}`), { exitCode: code }));
      else reject(new ReleaseError(`build step "${step.name}" was killed by ${sig}`));
    });
    function finish(): void {
      untrack?.();
      signal?.removeEventListener('abort', onAbort);
      clearTimeout(killTimer);
    }
  });
}

/** Feed complete lines (and a final unterminated one) from `stream` to `onLine`; over-long ones in pieces. */
function splitLines(stream: Readable, onLine: (line: string) => void): void {
  const lines = new LineSplitter(onLine);
  stream.on('data', (chunk: Buffer) => lines.push(chunk));
  stream.on('end', () => lines.flush());
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

async function isExecutable(p: string): Promise<boolean> {
  try {
    await access(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
