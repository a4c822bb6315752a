import path from 'node:path';
import { parse, parseEnvPairs, parseScale, readEnvFile, usageError } from './args.js';
import { Client, CliError, EXIT, type Doc } from './client.js';
import { describePlan, execute, expand, isEmpty, plan, waitHealthy } from './converge.js';
import { bytes, colorsEnabled, painter, type Out } from './format.js';
import { checkTypes, fromPackageJson, isUrl, readProcfile, resolveSource } from './source.js';

export const deployUsage = `Usage: drover deploy DIR|URL --app NAME [options]

Runs an app on the agent (DROVER_URL, default http://127.0.0.1:8080). A DIR is packed
(skipping .git, node_modules and what .gitignore lists) and uploaded to the agent; a URL is
downloaded by the agent. Its processes are NAME.TYPE.N (web.0, web.1, worker.0 ...).
Deploying again converges: unchanged processes are left alone, changed ones (source, env)
are replaced in place (the new release is built while the old process runs, then swapped),
and processes of the app beyond --scale are deleted. The app's env is kept: --env and
--env-file are merged into it (--replace-env gives exactly those). It succeeds once every
process it touched is ready (web: its $PORT accepts connections) or has stayed running for
--min-uptime; else it exits 1 with each failing process's last error and log lines.

Options:
  --app NAME           the app's name (required)
  --scale TYPE=N,...   processes per type (default: the app's current counts; for a new app
                       1 of each Procfile type, or web=1 for a URL)
  --env NAME=VALUE     an environment variable (repeatable), merged into the app's env
  --env-file FILE      variables from a dotenv file (--env wins)
  --replace-env        the app gets exactly the --env/--env-file given (others are dropped)
  --strategy S         stop-first (default: stop the old process, start the new one on the
                       same port) or start-first (start the new one on a new port, wait until
                       it is ready, then stop the old one)
  --min-uptime SECONDS how long a process without a readiness check must stay up (default 3)
  --no-wait            return once the processes are created
  --timeout SECONDS    how long to wait for them to be ready (default 600)
  --json               print a JSON summary on stdout`;

export interface DeployOptions {
  app: string;
  source: string;
  scale?: Record<string, number>;
  env: Record<string, string>;
  /** Give exactly `env` instead of merging it into the app's. */
  replaceEnv?: boolean;
  strategy?: 'stop-first' | 'start-first';
  minUptimeMs?: number;
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
    if (out && fromPackageJson(procfile))
      out.write(`${opts.source} has no Procfile: running web: npm start (package.json's start script)\n`);
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
  const p = plan(expand(opts.app, counts, source.url, opts.env, !opts.replaceEnv), current, mine);
  if (out && !isEmpty(p)) for (const line of describePlan(p, paint)) out.write(`${line}\n`);
  const touched = await execute(client, p, { strategy: opts.strategy, out, paint });
  if (out && isEmpty(p) && touched.length === 0) {
    const n = p.keep.length + p.replace.length;
    out.write(`${opts.app}: nothing to change (${n} process${n === 1 ? '' : 'es'} unchanged)\n`);
  }
  let ok = true;
  if (opts.wait && touched.length > 0) {
    ok = await waitHealthy(client, touched, {
      timeoutMs: opts.timeoutMs,
      minUptimeMs: opts.minUptimeMs ?? 3000,
      out: out ?? process.stderr,
    });
  }
  const slug = (d: Doc) => String(d.slug);
  return {
    ok,
    created: p.create.map((w) => `${w.app}.${w.node}`),
    replaced: p.replace.filter((r) => touched.some((d) => d.slug === r.current.slug)).map((r) => slug(r.current)),
    deleted: p.remove.map(slug),
    unchanged: [
      ...p.keep.map(slug),
      ...p.replace.filter((r) => !touched.some((d) => d.slug === r.current.slug)).map((r) => slug(r.current)),
    ],
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
      'replace-env': { type: 'boolean' },
      strategy: { type: 'string' },
      'min-uptime': { type: 'string' },
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
  const strategy = values.strategy ?? 'stop-first';
  if (strategy !== 'stop-first' && strategy !== 'start-first')
    throw usageError(`--strategy must be stop-first or start-first, got ${JSON.stringify(strategy)}`, 'deploy');
  const minUptime = values['min-uptime'] === undefined ? 3 : Number(values['min-uptime']);
  if (!Number.isFinite(minUptime) || minUptime < 0)
    throw usageError(`--min-uptime must be a number of seconds, got ${JSON.stringify(values['min-uptime'])}`, 'deploy');
  const env = { ...(values['env-file'] ? await readEnvFile(values['env-file']) : {}), ...parseEnvPairs(values.env ?? []) };
  const source = isUrl(positionals[0]) ? positionals[0] : path.resolve(positionals[0]);
  const client = new Client();
  const result = await deployApp(client, {
    app: values.app,
    source: isUrl(source) ? source : positionals[0],
    scale: values.scale ? parseScale(values.scale) : undefined,
    env,
    replaceEnv: values['replace-env'] === true,
    strategy,
    minUptimeMs: minUptime * 1000,
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
    throw new CliError(`some processes of ${values.app} are not healthy (see drover status SLUG, drover logs ${values.app})`, EXIT.failed);
  return 0;
}
