import { parse, usageError } from './args.js';
import { Client, CliError, EXIT, linkOf, type Doc } from './client.js';
import { attachEndError, attachStream, outputLine, readEvents, withQuery } from './stream.js';

export const logsUsage = `Usage: drover logs SLUG [-f] [--since ID] [--tail N] [--json]

Prints a process's output lines from its event log; -f keeps following new ones until the
process is deleted or you press Ctrl-C. On an agent without an event log, -f follows the
live output through the attach link instead (there is no history to print without -f).

Options:
  -f, --follow   keep printing new lines as they come
  --since ID     only what came after event ID
  --tail N       only the last N lines (then follow, with -f)
  --json         print the events themselves, one JSON object per line`;

export async function logs(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { follow: { type: 'boolean', short: 'f' }, since: { type: 'string' }, tail: { type: 'string' }, json: { type: 'boolean' } },
    'logs',
  );
  if (values.help) {
    process.stdout.write(`${logsUsage}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw usageError('expected one SLUG (see drover ps)', 'logs');
  for (const [flag, v] of [
    ['--since', values.since],
    ['--tail', values.tail],
  ] as const) {
    if (v !== undefined && !/^\d+$/.test(v)) throw usageError(`${flag} must be a non-negative integer, got ${JSON.stringify(v)}`, 'logs');
  }
  const client = new Client();
  const doc = await client.process(positionals[0]);
  const print = (line: string) => process.stdout.write(`${line}\n`);

  if (typeof doc.events !== 'string') {
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

  const emit = (ev: Doc) => {
    if (values.json) return print(JSON.stringify(ev));
    const line = outputLine(ev);
    if (line !== null) print(line);
  };
  let since = values.since;
  if (values.tail !== undefined) {
    // Read the history to its current end keeping only the last N lines, then follow from there.
    const keep = Number(values.tail);
    const last: Doc[] = [];
    let lastId: unknown;
    await readEvents(await client.request('GET', withQuery(doc.events, { since, follow: 'false' }), { stream: true }), (ev) => {
      lastId = ev.id ?? lastId;
      if (outputLine(ev) === null && !values.json) return;
      last.push(ev);
      if (last.length > keep) last.shift();
    });
    last.forEach(emit);
    if (!values.follow) return 0;
    if (lastId !== undefined) since = String(lastId);
  }
  const url = withQuery(doc.events, { since, follow: values.follow ? 'true' : 'false' });
  await readEvents(await client.request('GET', url, { stream: true }), emit);
  return 0;
}
