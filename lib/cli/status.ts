import { parse, usageError } from './args.js';
import { Client, oneLine, type Doc } from './client.js';
import { bytes, colorsEnabled, duration, painter, shownState, stateColor } from './format.js';
import { usageOf } from './ps.js';

export const statusUsage = `Usage: drover status SLUG [--json]

Shows one process: state, pid, port, restarts, uptime, errors, and what the agent offers
for it (its links).

Options:
  --json   the status document as JSON`;

export function describeStatus(doc: Doc, now: number, paint = painter(false)): string {
  const lines: [string, string][] = [];
  const started = typeof doc.started_at === 'string' ? Date.parse(doc.started_at) : NaN;
  const up = doc.state === 'running' && Number.isFinite(started) ? `, up ${duration(now - started)}` : '';
  const state = shownState(doc);
  lines.push(['state', `${paint(stateColor(state), state)}${doc.pid ? ` (pid ${doc.pid}${up})` : ''}`]);
  lines.push(['app', `${doc.app} (${doc.process_type} process ${doc.node})`]);
  if (doc.port != null) lines.push(['port', String(doc.port)]);
  if (doc.readiness === 'port' && doc.state === 'running')
    lines.push(['ready', doc.ready ? `yes, accepts connections since ${doc.ready_at}` : `not yet (waiting for port ${doc.port})`]);
  const release = doc.release as { id?: string | null; source?: string } | undefined;
  if (release && typeof release === 'object') lines.push(['release', `${release.id ?? '(not downloaded yet)'} from ${release.source}`]);
  if (typeof doc.command === 'string')
    lines.push(['command', `${doc.command}${doc.command_from === 'package.json' ? ' (package.json start script: no Procfile)' : ''}`]);
  lines.push(['restarts', String(doc.restarts ?? 0)]);
  const { cpu, rss } = usageOf(doc);
  if (cpu !== null || rss !== null)
    lines.push(['usage', `${cpu === null ? '-' : `${cpu.toFixed(1)}% CPU`}, ${rss === null ? '-' : bytes(rss)}`]);
  if (doc.last_exit && typeof doc.last_exit === 'object') {
    const e = doc.last_exit;
    lines.push(['last exit', e.signal ? `killed by ${e.signal}` : `code ${e.exit_code ?? e.code ?? '?'}`]);
  }
  if (doc.created_at) lines.push(['created', String(doc.created_at)]);
  if (Array.isArray(doc.env_names)) lines.push(['env', doc.env_names.length ? doc.env_names.join(', ') : '(none)']);
  const links = Object.entries(doc)
    .filter(([k, v]) => typeof v === 'string' && /^(https?|wss?):\/\//.test(v) && k !== 'details')
    .map(([k]) => k);
  lines.push(['links', links.join(', ')]);
  const errors = Array.isArray(doc.errors) ? (doc.errors as unknown[]) : [];
  const width = Math.max(...lines.map(([k]) => k.length));
  let text = `${doc.slug}\n${lines.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n')}\n`;
  if (errors.length) text += `  errors (newest last):\n${errors.map((e) => `    ${paint('red', oneLine(String(e)))}`).join('\n')}\n`;
  return text;
}

export async function status(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' } }, 'status');
  if (values.help) {
    process.stdout.write(`${statusUsage}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw usageError('expected one SLUG (see drover ps)', 'status');
  const client = new Client();
  // The listing's document may be a summary: read the process's own status link.
  const listed = await client.process(positionals[0]);
  const doc = typeof listed.status === 'string' ? await client.json('GET', listed.status) : listed;
  process.stdout.write(
    values.json ? `${JSON.stringify(doc, null, 2)}\n` : describeStatus(doc, Date.now(), painter(colorsEnabled(process.stdout))),
  );
  return 0;
}
