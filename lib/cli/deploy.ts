import path from 'node:path';
import { parse, parseEnvPairs, parseScale, readEnvFile, usageError } from './args.js';
import { Client, CliError, EXIT, type Doc } from './client.js';
import { describePlan, execute, expand, isEmpty, plan, waitUntilRunning } from './converge.js';
import { bytes, colorsEnabled, painter, type Out } from './format.js';
import { checkTypes, isUrl, readProcfile, resolveSource } from './source.js';

export const deployUsage = `Usage: drover deploy DIR|URL --app NAME [options]

Runs an app on the agent (DROVER_URL, default http://127.0.0.1:8080). A DIR is packed
(skipping .git, node_modules and what .gitignore lists) and uploaded to the agent; a URL is
downloaded by the agent. Its processes are NAME.TYPE.N (web.0, web.1, worker.0 ...).
Deploying again converges: unchanged processes are left alone, changed ones (source, env)
are replaced, and processes of the app beyond --scale are deleted.

Options:
  --app NAME           the app's name (required)
  --scale TYPE=N,...   processes per type (default: the app's current counts; for a new app
                       1 of each Procfile type, or web=1 for a URL)
  --env NAME=VALUE     an environment variable (repeatable); the app gets exactly these
  --env-file FILE      variables from a dotenv file (--env wins)
  --no-wait            return once the processes are created
  --timeout SECONDS    how long to wait for them to run (default 600)
  --json               print a JSON summary on stdout`;

export interface DeployOptions {
  app: string;
  source: string;
  scale?: Record<string, number>;
  env: Record<string, string>;
  wait: boolean;
  timeoutMs: number;
  /** Human output; null for none. */
  out: Out | null;
  progress?: Out;
}

export interface DeployResult {
  ok: boolean;
  created: string[];
  replaced: string[];
  deleted: string[];
  unchanged: string[];
  processes: Doc[];
}

/** Packs/uploads the source, converges the app's processes, waits for them (deploy and demo). */
export async function deployApp(client: Client, opts: DeployOptions): Promise<DeployResult> {
  const out = opts.out;
  const paint = painter(out ? colorsEnabled(out) : false);
  let counts = opts.scale;
  let procfileTypes: string[] | null = null;
  if (!isUrl(opts.source)) {
    const procfile = await readProcfile(opts.source);
    procfileTypes = [...procfile.keys()];
    if (counts) checkTypes(opts.source, procfile, Object.keys(counts));
  }
  const current = await client.processes();
  const mine = (d: Doc) => d.app === opts.app;
  if (!counts) {
    const running = current.filter(mine);
    counts = {};
    if (running.length > 0) {
      for (const d of running) counts[d.process_type] = (counts[d.process_type] ?? 0) + 1;
      // A type the new Procfile dropped goes away.
      if (procfileTypes) for (const t of Object.keys(counts)) if (!procfileTypes.includes(t)) delete counts[t];
    } else {
      for (const t of procfileTypes ?? ['web']) counts[t] = 1;
    }
  }

  const source = await resolveSource(client, opts.source, { progress: opts.progress });
  if (out && source.packed) {
    const p = source.packed;
    out.write(
      `packed ${opts.source}: ${p.files} files, ${bytes(p.size)}, sha256 ${p.sha256.slice(0, 12)} (${source.reused ? 'already on the agent' : 'uploaded'})\n`,
    );
  }
  const p = plan(expand(opts.app, counts, source.url, opts.env), current, mine);
  if (out) {
    if (isEmpty(p)) out.write(`${opts.app}: nothing to change (${p.keep.length} process${p.keep.length === 1 ? '' : 'es'} unchanged)\n`);
    else for (const line of describePlan(p, paint)) out.write(`${line}\n`);
  }
  const created = await execute(client, p);
  let ok = true;
  if (opts.wait && created.length > 0) {
    ok = await waitUntilRunning(client, created, { timeoutMs: opts.timeoutMs, out: out ?? process.stderr });
  }
  const slug = (d: Doc) => String(d.slug);
  return {
    ok,
    created: p.create.map((w) => `${w.app}.${w.node}`),
    replaced: p.replace.map((r) => slug(r.current)),
    deleted: p.remove.map(slug),
    unchanged: p.keep.map(slug),
    processes: (await client.processes()).filter(mine),
  };
}

export async function deploy(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      app: { type: 'string' },
      scale: { type: 'string', multiple: true },
      env: { type: 'string', multiple: true },
      'env-file': { type: 'string' },
      'no-wait': { type: 'boolean' },
      timeout: { type: 'string' },
      json: { type: 'boolean' },
    },
    'deploy',
  );
  if (values.help) {
    process.stdout.write(`${deployUsage}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw usageError('expected one DIR or URL', 'deploy');
  if (!values.app) throw usageError('--app NAME is required', 'deploy');
  const timeout = values.timeout === undefined ? 600 : Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0)
    throw usageError(`--timeout must be a number of seconds, got ${JSON.stringify(values.timeout)}`, 'deploy');
  const env = { ...(values['env-file'] ? await readEnvFile(values['env-file']) : {}), ...parseEnvPairs(values.env ?? []) };
  const source = isUrl(positionals[0]) ? positionals[0] : path.resolve(positionals[0]);
  const client = new Client();
  const result = await deployApp(client, {
    app: values.app,
    source: isUrl(source) ? source : positionals[0],
    scale: values.scale ? parseScale(values.scale) : undefined,
    env,
    wait: !values['no-wait'],
    timeoutMs: timeout * 1000,
    out: values.json ? null : process.stdout,
    progress: process.stderr,
  });
  if (values.json) {
    process.stdout.write(
      `${JSON.stringify({ ok: result.ok, created: result.created, replaced: result.replaced, deleted: result.deleted, unchanged: result.unchanged, processes: result.processes }, null, 2)}\n`,
    );
  }
  if (!result.ok)
    throw new CliError(`some processes of ${values.app} failed to start (see drover status SLUG, drover logs SLUG)`, EXIT.failed);
  return 0;
}
