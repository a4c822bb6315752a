import { statSync } from 'node:fs';
import path from 'node:path';
import { defaults } from '../agent/config.js';
import { parse, parseEnvPairs, parseScale, readEnvFile, usageError } from './args.js';
import { CliError, EXIT } from './client.js';
import { colorsEnabled, painter, type Color } from './format.js';
import { checkTypes, readProcfile } from './source.js';

export const startUsage = `Usage: drover start [DIR] [TYPE...] [options]
       drover start SLUG            (start a stopped process on the agent)

Runs the Procfile app in DIR (default: the current directory) in the foreground, like
foreman: every process type (or the TYPEs given), output prefixed with the process name,
the app's .env, and PORT per process. Processes that exit are restarted with backoff.
Ctrl-C stops everything gracefully; a second Ctrl-C kills at once. DIR is run in place:
no build step runs (install dependencies yourself, as with foreman).

How the first argument is read: a path (it contains "/", or is "." or "..") or an existing
directory is DIR; a word without a dot is a TYPE; APP.NODE (e.g. shop.web.0) with no such
directory here is a SLUG. Anything else is an error: write ./NAME for a directory.

Options:
  --scale TYPE=N,...   processes per type (default 1 each)
  --port N             PORT of the first process (default $PORT or 5000); each type gets
                       the next hundred, each further instance the next port
  --env NAME=VALUE     an extra variable (repeatable; wins over .env and the Procfile)
  --env-file FILE      read variables from FILE instead of DIR/.env
  --stop-grace-ms MS   time between SIGTERM and SIGKILL when stopping (default 10000)`;

// An app or node name (lib/http/validate.ts): the slug is APP.NODE, and both may hold dots.
const SLUG = /^[A-Za-z0-9][A-Za-z0-9_.-]*\.[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * What the first argument of `drover start` names, by the rule in the help text: options and
 * no argument mean the current directory; a path or an existing directory is the directory;
 * a dotless word a process type (types never have a dot); APP.NODE a remote process.
 */
export function startArgument(first: string | undefined, isDir: (p: string) => boolean = isDirectory): 'dir' | 'type' | 'slug' | 'none' {
  if (first === undefined || first.startsWith('-')) return 'none';
  if (first.includes('/') || first === '.' || first === '..' || isDir(first)) return 'dir';
  if (!first.includes('.')) return 'type';
  if (SLUG.test(first) && !first.includes('..')) return 'slug';
  throw new CliError(
    `${JSON.stringify(first)} is neither a directory here nor a process slug (APP.NODE); write ./${first} for a directory`,
    EXIT.usage,
  );
}

/** A remote slug (app.node) rather than a directory or a process type: `drover start SLUG`. */
export function isRemoteStart(argv: string[]): boolean {
  return startArgument(argv[0]) === 'slug';
}

const PALETTE: Color[] = ['cyan', 'yellow', 'green', 'magenta', 'blue', 'red'];

function clock(): string {
  return new Date().toTimeString().slice(0, 8);
}

export async function start(argv: string[]): Promise<number> {
  if (isRemoteStart(argv)) return (await import('./control.js')).control('start', argv);
  const { values, positionals } = parse(
    argv,
    {
      scale: { type: 'string', multiple: true },
      port: { type: 'string' },
      env: { type: 'string', multiple: true },
      'env-file': { type: 'string' },
      'stop-grace-ms': { type: 'string' },
    },
    'start',
  );
  if (values.help) {
    process.stdout.write(`${startUsage}\n`);
    return 0;
  }
  let dir = '.';
  let types = positionals;
  const first = startArgument(positionals[0]);
  // A slug after options: no process type has a dot, so it can only be a missing directory.
  if (first === 'slug') throw new CliError(`${positionals[0]}: no such directory`, EXIT.usage);
  if (first === 'dir') [dir, ...types] = positionals;
  dir = path.resolve(dir);
  const procfile = await readProcfile(dir);
  checkTypes(dir, procfile, types);
  const scale = parseScale(values.scale ?? []);
  checkTypes(dir, procfile, Object.keys(scale));
  const selected = types.length ? [...new Set(types)] : [...procfile.keys()];
  const formation = selected.map((type) => ({ type, count: scale[type] ?? 1 })).filter((f) => f.count > 0);
  if (formation.length === 0) throw usageError('nothing to run: every selected type is scaled to 0', 'start');
  const basePort = Number(values.port ?? process.env.PORT ?? 5000);
  if (!Number.isInteger(basePort) || basePort < 1 || basePort > 65535)
    throw usageError(`--port must be a port number, got ${JSON.stringify(values.port ?? process.env.PORT)}`, 'start');
  const graceMs = values['stop-grace-ms'] === undefined ? defaults.stopGraceMs : Number(values['stop-grace-ms']);
  if (!Number.isInteger(graceMs) || graceMs < 0)
    throw usageError(`--stop-grace-ms must be a non-negative integer, got ${JSON.stringify(values['stop-grace-ms'])}`, 'start');
  const dotenv = values['env-file'] ? await readEnvFile(values['env-file']) : undefined;

  const paint = painter(colorsEnabled(process.stdout));
  const names = formation.flatMap(({ type, count }) => Array.from({ length: count }, (_, i) => `${type}.${i}`));
  const width = Math.max('system'.length, ...names.map((n) => n.length));
  const colorOf = new Map(names.map((n, i) => [n, PALETTE[i % PALETTE.length]]));
  const prefix = (name: string) => paint(colorOf.get(name) ?? 'bold', `${clock()} ${name.padEnd(width)} |`);
  const say = (name: string, text: string) => process.stdout.write(`${prefix(name)} ${text}\n`);

  // Loaded here, not at the top: `drover start SLUG` must not pay for the process model.
  const { ForegroundRunner } = await import('../agent/foreground.js');
  const { portableSampler } = await import('../os/portable-sampler.js');
  const runner = new ForegroundRunner({
    dir,
    procfile,
    app: path.basename(dir),
    formation,
    basePort,
    env: parseEnvPairs(values.env ?? []),
    dotenv,
    stopGraceMs: graceMs,
    sampler: portableSampler(defaults.usageSampleMs),
    backoff: { initialMs: defaults.backoffInitialMs, maxMs: defaults.backoffMaxMs, resetAfterMs: defaults.backoffResetMs },
    onLine: (name, _stream, line) => say(name, line),
    onNotice: (name, message, bad) => say(name, bad ? paint('red', message) : paint('dim', message)),
  });
  for (const p of runner.processes) say('system', paint('dim', `${p.name} on port ${p.port}`));
  runner.start();

  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        if (sig === 'SIGINT') {
          say('system', paint('red', 'second interrupt: killing every process now'));
          runner.kill();
          resolve(130);
        }
        return;
      }
      stopping = true;
      say('system', paint('dim', `${sig} received, stopping all processes (Ctrl-C again to kill them)`));
      void runner.stop().then(() => {
        for (const s of signals) process.off(s, onSignal);
        resolve(0);
      });
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of signals) process.on(s, onSignal);
  });
}
