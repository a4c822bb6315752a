import { parse, usageError } from './args.js';
import { Client, CliError, EXIT, type Doc } from './client.js';
import { describePlan, execute, expand, isEmpty, plan, waitHealthy, type PlannedProcess } from './converge.js';
import { colorsEnabled, painter } from './format.js';
import { readManifest } from './manifest.js';
import { checkTypes, isUrl, readProcfile, resolveSource } from './source.js';

export const applyUsage = `Usage: drover apply FILE.yaml [--dry-run] [--no-wait] [--json]

Converges the agent (DROVER_URL) to a manifest of apps: creates the processes that are
missing, replaces those whose source or env changed, deletes every process the manifest
does not list, and leaves the rest alone. Directories are packed and uploaded as by
drover deploy.

  apps:
    shop:
      source: ./shop                  # a directory (relative to FILE) or a URL
      processes: {web: 2, worker: 1}
      env: {GREETING: hi}             # optional
      env_file: shop.env              # optional; env wins

Options:
  --dry-run            print the plan and change nothing
  --no-wait            return once the processes are created
  --timeout SECONDS    how long to wait for them to run (default 600)
  --json               print the plan (and outcome) as JSON`;

export async function apply(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { 'dry-run': { type: 'boolean' }, 'no-wait': { type: 'boolean' }, timeout: { type: 'string' }, json: { type: 'boolean' } },
    'apply',
  );
  if (values.help) {
    process.stdout.write(`${applyUsage}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw usageError('expected one manifest FILE', 'apply');
  const timeout = values.timeout === undefined ? 600 : Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0)
    throw usageError(`--timeout must be a number of seconds, got ${JSON.stringify(values.timeout)}`, 'apply');
  const apps = await readManifest(positionals[0]);
  for (const app of apps) {
    if (!isUrl(app.source))
      checkTypes(
        app.source,
        await readProcfile(app.source),
        Object.keys(app.processes).filter((t) => app.processes[t] > 0),
      );
  }
  const dryRun = values['dry-run'] === true;
  const out = values.json ? null : process.stdout;
  const client = new Client();
  const desired: PlannedProcess[] = [];
  for (const app of apps) {
    const src = await resolveSource(client, app.source, { dryRun, progress: process.stderr });
    desired.push(...expand(app.name, app.processes, src.url, app.env));
  }
  const current = await client.processes();
  const p = plan(desired, current, () => true);
  const summary = {
    dry_run: dryRun,
    create: p.create.map((w) => `${w.app}.${w.node}`),
    replace: p.replace.map((r) => ({ slug: String(r.current.slug), why: r.why })),
    delete: p.remove.map((d) => String(d.slug)),
    unchanged: p.keep.map((d) => String(d.slug)),
  };
  if (out) {
    if (isEmpty(p)) out.write(`nothing to change (${p.keep.length} process${p.keep.length === 1 ? '' : 'es'} unchanged)\n`);
    else for (const line of describePlan(p, painter(colorsEnabled(out)))) out.write(`${line}\n`);
  }
  if (dryRun) {
    if (values.json) process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    return 0;
  }
  const created: Doc[] = await execute(client, p, { out, paint: painter(out ? colorsEnabled(out) : false) });
  let ok = true;
  if (!values['no-wait'] && created.length > 0)
    ok = await waitHealthy(client, created, { timeoutMs: timeout * 1000, minUptimeMs: 3000, out: out ?? process.stderr });
  if (values.json) process.stdout.write(`${JSON.stringify({ ...summary, ok }, null, 2)}\n`);
  if (!ok) throw new CliError('some processes failed to start (see drover status SLUG, drover logs SLUG)', EXIT.failed);
  return 0;
}
