import { parse, usageError } from './args.js';
import { Client, CliError, EXIT, linkOf, type Doc } from './client.js';
import { colorsEnabled, painter, type Color, type Painter } from './format.js';
import { attachEndError, attachStream, outputLine, readEvents, withQuery } from './stream.js';

export const logsUsage = `Usage: drover logs [APP|SLUG] [-f] [-n N] [--since ID] [--all-runs] [--json]

Prints output lines from the event log: of every process (no argument), of every process of
APP, or of one process SLUG, with markers for starts (pid), exits (code or signal, run time),
restarts (delay), readiness and replaces. With several processes each line is prefixed with
its process (coloured on a TTY). -f keeps following, across restarts, until the process is
deleted (said on a last line) or you press Ctrl-C. Only the current process's history is
shown, not that of an earlier process that had the same slug, unless --all-runs. On an agent
without an event log, -f follows the live output of one SLUG through its attach link.

Options:
  -f, --follow    keep printing new lines as they come
  -n, --tail N    only the last N lines of each process (then follow, with -f)
  --since ID      only what came after event ID (one process)
  --all-runs      also earlier processes that had the same slug
  --json          print the events themselves, one JSON object per line`;

/** A marker line for an event of the process's life, or null for events that are not shown. */
export function markerText(ev: Doc): string | null {
  const s = (sec: unknown) => (typeof sec === 'number' ? `${Number(sec.toPrecision(3))} s` : '?');
  switch (ev.type) {
    case 'child_started':
      return `── started (pid ${ev.pid}${ev.port ? `, port ${ev.port}` : ''})`;
    case 'child_exited': {
      const how = ev.error ? `could not start: ${ev.error}` : ev.signal ? `killed by ${ev.signal}` : `exited with code ${ev.exit_code}`;
      return `── ${how} after ${s(ev.duration)}`;
    }
    case 'restart_scheduled':
      return `── restarting in ${ev.delay_ms} ms (restart ${ev.restarts})`;
    case 'ready':
      return `── ready on port ${ev.port} after ${s(Number(ev.after_ms) / 1000)}`;
    case 'replace_started':
      return `── replace started (${ev.strategy}${Array.isArray(ev.changed) && ev.changed.length ? `: ${ev.changed.join(', ')}` : ''}); building`;
    case 'replaced':
      return `── replaced (${ev.strategy}${ev.from_port !== ev.to_port ? `, port ${ev.from_port} → ${ev.to_port}` : ''})`;
    case 'replace_failed':
      return `── replace failed: ${ev.error}`;
    case 'error':
      return `── error: ${ev.message}`;
    default:
      return null;
  }
}

/** A new process (not a restored one) begins its history: earlier events belong to a previous process of that slug. */
const isCreation = (ev: Doc) => ev.type === 'state' && ev.from === null && ev.why === 'created';

const PALETTE: Color[] = ['cyan', 'magenta', 'blue', 'yellow', 'green'];

export async function logs(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      follow: { type: 'boolean', short: 'f' },
      since: { type: 'string' },
      tail: { type: 'string', short: 'n' },
      'all-runs': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    'logs',
  );
  if (values.help) {
    process.stdout.write(`${logsUsage}\n`);
    return 0;
  }
  if (positionals.length > 1) throw usageError('expected at most one APP or SLUG (see drover ps)', 'logs');
  for (const [flag, v] of [
    ['--since', values.since],
    ['--tail', values.tail],
  ] as const) {
    if (v !== undefined && !/^\d+$/.test(v)) throw usageError(`${flag} must be a non-negative integer, got ${JSON.stringify(v)}`, 'logs');
  }
  const client = new Client();
  const all = await client.processes();
  const name = positionals[0];
  let targets: Doc[];
  if (name === undefined) targets = all;
  else {
    const one = all.find((d) => d.slug === name);
    targets = one ? [one] : all.filter((d) => d.app === name);
    if (targets.length === 0)
      throw new CliError(`no process or app "${name}" on the agent at ${client.url} (see drover ps)`, EXIT.notFound);
  }
  targets.sort((a, b) => (String(a.slug) < String(b.slug) ? -1 : 1));
  if (values.since !== undefined && targets.length > 1) throw usageError('--since ID applies to one process; give its SLUG', 'logs');
  const print = (line: string) => process.stdout.write(`${line}\n`);
  if (targets.length === 0) {
    if (!values.json) process.stderr.write('no processes on the agent (see drover deploy)\n');
    return 0;
  }

  if (targets.length === 1 && typeof targets[0].events !== 'string') {
    const doc = targets[0];
    if (!values.follow) {
      throw new CliError(
        `the agent does not offer events (an event log) for ${doc.slug}; drover logs -f ${doc.slug} follows its live output`,
        EXIT.unsupported,
      );
    }
    const url = withQuery(linkOf(doc, 'attach', 'attaching to output'), { since: values.since, tail: values.tail });
    const err = attachEndError(await attachStream(client, url, print));
    if (err) throw err;
    return 0;
  }

  const paint: Painter = painter(colorsEnabled(process.stdout));
  const width = Math.max(...targets.map((d) => String(d.slug).length));
  const prefixed = name === undefined || targets.length > 1 || String(targets[0].slug) !== name;
  const render = (doc: Doc, i: number) => {
    const head = prefixed ? `${paint(PALETTE[i % PALETTE.length], String(doc.slug).padEnd(width))} | ` : '';
    return (ev: Doc): string | null => {
      if (values.json) return JSON.stringify(values.json && prefixed ? { slug: doc.slug, ...ev } : ev);
      const text = outputLine(ev);
      if (text !== null) return head + text;
      const marker = markerText(ev);
      if (marker === null) return null;
      const bad = ev.type === 'child_exited' || ev.type === 'error' || ev.type === 'replace_failed';
      return head + paint(bad ? 'red' : ev.type === 'restart_scheduled' ? 'yellow' : 'gray', marker);
    };
  };

  // History: each process's events to their current end, from its current run unless --all-runs.
  const histories: { doc: Doc; index: number; lines: { time: string; text: string }[]; lastId?: number }[] = [];
  for (const [index, doc] of targets.entries()) {
    if (typeof doc.events !== 'string') continue;
    const show = render(doc, index);
    const h = { doc, index, lines: [] as { time: string; text: string }[], lastId: undefined as number | undefined };
    await readEvents(
      await client.request('GET', withQuery(doc.events, { since: values.since, follow: 'false' }), { stream: true }),
      (ev) => {
        if (typeof ev.id === 'number') h.lastId = ev.id;
        if (isCreation(ev) && !values['all-runs']) h.lines = [];
        const text = show(ev);
        if (text === null) return;
        h.lines.push({ time: String(ev.time ?? ''), text });
        if (values.tail !== undefined && h.lines.length > Number(values.tail)) h.lines.shift();
      },
    );
    histories.push(h);
  }
  // Interleaved by time, as they happened.
  const merged = histories.flatMap((h) => h.lines).sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
  for (const l of merged) print(l.text);
  if (!values.follow) return 0;

  await Promise.all(
    histories.map(async (h) => {
      const show = render(h.doc, h.index);
      const since = h.lastId !== undefined ? String(h.lastId) : values.since;
      await readEvents(await client.request('GET', withQuery(h.doc.events, { since, follow: 'true' }), { stream: true }), (ev) => {
        const text = show(ev);
        if (text !== null) print(text);
      });
      // The stream ends when the process is deleted.
      if (!values.json) {
        const head = prefixed ? `${String(h.doc.slug).padEnd(width)} | ` : '';
        print(head + paint('gray', `── ${h.doc.slug} was deleted; no more output`));
      }
    }),
  );
  return 0;
}
