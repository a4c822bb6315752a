import { parse, usageError } from './args.js';
import { Client, type Doc } from './client.js';
import { bytes, colorsEnabled, duration, painter, shownState, stateColor, table } from './format.js';

export const psUsage = `Usage: drover ps [--json]

Lists every process on the agent (DROVER_URL): slug, state, pid, port, restarts, uptime,
CPU and memory of its whole process tree where the agent reports them, the release it runs
(the archive's short content hash and where it came from: "upload" for a deploy of a
directory) and its command ("(package.json)" when there is no Procfile and the app's start
script runs as web: npm start).

Options:
  --json   the status documents as JSON`;

/** CPU % and RSS bytes, from the status document's `usage` when the agent reports it. */
export function usageOf(doc: Doc): { cpu: number | null; rss: number | null } {
  const u = doc.usage;
  if (!u || typeof u !== 'object') return { cpu: null, rss: null };
  const num = (...vals: unknown[]) => vals.find((v): v is number => typeof v === 'number' && Number.isFinite(v)) ?? null;
  return { cpu: num(u.cpu_percent, u.cpu), rss: num(u.rss_bytes, u.rss, u.memory) };
}

export function psRows(docs: Doc[], now: number, paint = painter(false)): string[][] {
  return [...docs]
    .sort((a, b) => (String(a.slug) < String(b.slug) ? -1 : 1))
    .map((d) => {
      const { cpu, rss } = usageOf(d);
      const started = typeof d.started_at === 'string' ? Date.parse(d.started_at) : NaN;
      // An agent with stop/start reports a stopped process as exited plus `stopped: true`.
      const state = shownState(d);
      return [
        // A proc (POST /procs) by its client's id: `proc:ID`.
        d.proc_id !== undefined ? `proc:${String(d.proc_id)}` : String(d.slug),
        paint(stateColor(state), state),
        d.pid == null ? '-' : String(d.pid),
        d.port == null ? '-' : String(d.port),
        String(d.restarts ?? '-'),
        d.state === 'running' && Number.isFinite(started) ? duration(now - started) : '-',
        cpu === null ? '-' : `${cpu.toFixed(1)}%`,
        rss === null ? '-' : bytes(rss),
        releaseCell(d),
        commandCell(d),
      ];
    });
}

/** "3f2a9c1b7d10 upload", "3f2a9c1b7d10 example.com/app.tgz"; "-" when the agent does not say. */
export function releaseCell(d: Doc): string {
  const r = d.release as { id?: string | null; source?: string } | undefined;
  if (!r || typeof r !== 'object') return '-';
  return `${r.id ?? '-'} ${shortSource(String(r.source ?? ''))}`.trim();
}

/** A source URL, short: "upload" for the agent's own blob store (a deployed directory), else host and file name. */
export function shortSource(source: string): string {
  let u: URL;
  try {
    u = new URL(source);
  } catch {
    return source.slice(0, 40);
  }
  if (/\/data\/[0-9a-f]{64}\/blob$/.test(u.pathname)) return 'upload';
  const file = u.pathname.split('/').filter(Boolean).at(-1) ?? '';
  return u.protocol === 'file:' ? file : `${u.host}${file ? `/${u.pathname.split('/').length > 2 ? '…/' : ''}${file}` : ''}`;
}

/** The command, cut to 40 characters; "(package.json)" when it is the start script of an app without a Procfile. */
export function commandCell(d: Doc): string {
  if (typeof d.command !== 'string') return '-';
  const cmd = d.command.length > 40 ? `${d.command.slice(0, 39)}…` : d.command;
  return d.command_from === 'package.json' ? `${cmd} (package.json)` : cmd;
}

export async function ps(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' } }, 'ps');
  if (values.help) {
    process.stdout.write(`${psUsage}\n`);
    return 0;
  }
  if (positionals.length) throw usageError(`unexpected argument ${JSON.stringify(positionals[0])}`, 'ps');
  const docs = await new Client().processes();
  if (values.json) {
    process.stdout.write(`${JSON.stringify(docs, null, 2)}\n`);
    return 0;
  }
  if (docs.length === 0) {
    process.stdout.write('no processes (drover deploy DIR --app NAME starts some)\n');
    return 0;
  }
  const paint = painter(colorsEnabled(process.stdout));
  process.stdout.write(
    table(['SLUG', 'STATE', 'PID', 'PORT', 'RESTARTS', 'UPTIME', 'CPU', 'MEM', 'RELEASE', 'COMMAND'], psRows(docs, Date.now(), paint)),
  );
  return 0;
}
