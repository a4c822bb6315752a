// The one recipe for what a process starts: its command (a Procfile entry of the app, or an
// explicit argv), its working directory and its environment. The agent (in a release it
// built), `drover start` (in a working copy) and the CLI's checks all go through here, so the
// Procfile is read the same way everywhere: size-capped and never through a symlink, since
// the agent may be root while the app's files are not its own.
import { isAbsolute, join, resolve } from 'node:path';
import type { ChildCommand } from '../os/child.js';
import type { FdEntry } from '../os/fds.js';
import { checkExecSize } from '../os/exec-limits.js';
import { buildEnvPath } from './build.js';
import { childEnv, readDotenv, type EnvLayers } from './env.js';
import { DEFAULT_PROCFILE_MAX_BYTES, describeTypes, parseProcfile, type ProcfileEntry } from './procfile.js';
import { hasStartScript } from './package-json.js';
import { readSmallFile } from './small-file.js';

/** Run the Procfile entry of this type (what every process did before specs). */
export interface ProcfileSpec {
  kind: 'procfile';
  processType: string;
}

/**
 * Run this argv: argv[0] is executed directly (looked up in PATH when it has no slash), no
 * shell parses anything. `cwd` is relative to the app's directory (the default); `env` sits
 * where a Procfile entry's inline variables would: over .env, under the request's.
 */
export interface ArgvSpec {
  kind: 'argv';
  argv: string[];
  cwd?: string;
  env?: Record<string, string>;
  /** The file executed (execve semantics: relative to cwd, no PATH search); argv[0] by default. Set for procs. */
  exe?: string;
  /**
   * A proc's environment, exactly (Procstar's `env`): the agent's variables it inherits (all,
   * none, or those named that exist), then `vars` (null unsets). No .env, PORT or DROVER_*.
   */
  environ?: ProcEnv;
  /** The child's fds, in the order they are set up (Procstar's `fds`). */
  fds?: FdEntry[];
  /** The user a proc runs as (drover's extension; the agent must be root). */
  user?: string;
}

export interface ProcEnv {
  inherit: boolean | string[];
  vars: Record<string, string | null>;
}

/** A proc's environment from the agent's (already without DROVER_*). */
export function procEnv(agentEnv: Record<string, string>, spec: ProcEnv): Record<string, string> {
  const env: Record<string, string> = {};
  if (spec.inherit === true) Object.assign(env, agentEnv);
  else if (Array.isArray(spec.inherit)) for (const name of spec.inherit) if (Object.hasOwn(agentEnv, name)) env[name] = agentEnv[name];
  for (const [name, value] of Object.entries(spec.vars)) {
    if (value === null) delete env[name];
    else env[name] = value;
  }
  return env;
}

/**
 * Run the Procfile entry of this type once, as a pull-mode job: stdin read from one file (the
 * job's input), stdout written to another (its output), byte for byte; stderr is the log.
 */
export interface JobSpec {
  kind: 'job';
  processType: string;
  /** Absolute path of the input. */
  stdin: string;
  /** Absolute path the output is written to (created or truncated at each start). */
  stdout: string;
}

export type ProcessSpec = ProcfileSpec | ArgvSpec | JobSpec;

/** What a process needs to start its command: produced by `building`, reused on every restart. */
export type Launch = ChildCommand & {
  /** What runs, in words, and where that comes from (shown in the status document and `drover ps`). */
  origin?: LaunchOrigin;
  cwd: string;
  env: Record<string, string>;
  exe?: string;
  fds?: readonly FdEntry[];
  user?: string;
  stdinFile?: string;
  stdoutFile?: string;
};

export type Procfile = Map<string, ProcfileEntry>;

export interface LaunchOrigin {
  /** The Procfile entry's command, or the argv joined with spaces (cut to 200 characters). */
  command: string;
  from: 'Procfile' | 'package.json' | 'argv';
}

/** What a missing Procfile means, in every message that says so. */
export const NO_PROCFILE = 'no Procfile at its root (nor a package.json with a "start" script)';

/**
 * DIR/Procfile parsed; without one, Heroku's default for a Node.js app: `web: npm start` when
 * DIR/package.json has a `start` script. Null when there is neither. Read through the safe read.
 */
export async function readProcfile(dir: string): Promise<Procfile | null> {
  const text = await readSmallFile(join(dir, 'Procfile'), DEFAULT_PROCFILE_MAX_BYTES, 'Procfile');
  if (text !== null) return parseProcfile(text);
  return (await hasStartScript(dir))
    ? new Map([['web', { type: 'web', command: 'npm start', env: {}, line: 0, from: 'package.json' as const }]])
    : null;
}

export function procfileEntry(procfile: Procfile, type: string): ProcfileEntry {
  const entry = procfile.get(type);
  if (!entry) {
    const has = [...procfile.values()].some((e) => e.from === 'package.json') ? 'package.json gives only' : 'the Procfile has';
    throw new Error(`unknown process type "${type}"; ${has}: ${describeTypes(procfile)}`);
  }
  return entry;
}

/**
 * Fails, naming the cause, when DIR cannot run the spec: no Procfile, or no entry of its type.
 * Checked right after unpacking, so no build time goes to a release that cannot run.
 */
export async function checkSpec(dir: string, spec: ProcessSpec): Promise<void> {
  if (spec.kind === 'argv') return;
  const procfile = await readProcfile(dir);
  if (!procfile) throw new Error(`the source archive has ${NO_PROCFILE}`);
  procfileEntry(procfile, spec.processType);
}

export interface LaunchInput {
  /** The release root or the working directory: holds the Procfile and .env. */
  dir: string;
  spec: ProcessSpec;
  /** The agent's environment, lowest precedence (filtered of DROVER_* again by childEnv). */
  agentEnv: Record<string, string>;
  /** The request's (or the command line's) variables, over .env and the Procfile's. */
  env: Record<string, string>;
  port: number;
  identity: EnvLayers['identity'];
  /** Replaces DIR/.env when given (drover start --env-file). */
  dotenv?: Record<string, string>;
  /** The Procfile, when the caller already read it (drover start reads it once for all). */
  procfile?: Procfile;
}

/** Resolves a spec in DIR into the command, cwd and environment to start. */
export async function resolveLaunch(input: LaunchInput): Promise<Launch> {
  const { dir, spec } = input;
  if (spec.kind === 'argv' && spec.environ) {
    // A proc: no release, no layered app environment; exactly what its spec says.
    if (spec.argv.length === 0 || spec.argv[0] === '') throw new Error('argv needs a program to run (argv[0])');
    const env = procEnv(input.agentEnv, spec.environ);
    checkExecSize(spec.argv, env);
    const cwd = spec.cwd === undefined ? dir : resolve(dir, spec.cwd);
    return {
      argv: [...spec.argv],
      cwd,
      env,
      ...(spec.exe !== undefined ? { exe: spec.exe } : {}),
      ...(spec.fds ? { fds: spec.fds } : {}),
      ...(spec.user ? { user: spec.user } : {}),
    };
  }
  let command: ChildCommand;
  let specEnv: Record<string, string>;
  let cwd = dir;
  let files: Pick<Launch, 'stdinFile' | 'stdoutFile'> = {};
  let origin: LaunchOrigin;
  if (spec.kind === 'procfile' || spec.kind === 'job') {
    const procfile = input.procfile ?? (await readProcfile(dir));
    if (!procfile) throw new Error(`the source archive has ${NO_PROCFILE}`);
    const entry = procfileEntry(procfile, spec.processType);
    command = { command: entry.command };
    origin = { command: entry.command.slice(0, 200), from: entry.from ?? 'Procfile' };
    specEnv = entry.env;
    if (spec.kind === 'job') files = { stdinFile: spec.stdin, stdoutFile: spec.stdout };
  } else {
    if (spec.argv.length === 0 || spec.argv[0] === '') throw new Error('argv needs a program to run (argv[0])');
    command = { argv: [...spec.argv] };
    origin = { command: spec.argv.join(' ').slice(0, 200), from: 'argv' };
    specEnv = spec.env ?? {};
    if (spec.cwd !== undefined) cwd = isAbsolute(spec.cwd) ? spec.cwd : resolve(dir, spec.cwd);
  }
  const env = childEnv({
    agent: input.agentEnv,
    dotenv: input.dotenv ?? (await readDotenv(dir)),
    procfile: specEnv,
    request: input.env,
    port: input.port,
    identity: input.identity,
  });
  env.PATH = buildEnvPath(dir, env.PATH ?? '');
  // Past the kernel's limits spawn() would fail with a bare E2BIG: say which variable instead.
  checkExecSize(command.argv ?? [command.command], env);
  return { ...command, origin, cwd, env, ...files };
}
