import { parse, usageError } from './args.js';
import { Client, linkOf } from './client.js';
import { shownState } from './format.js';

export type ControlVerb = 'stop' | 'start' | 'restart' | 'signal';

const what: Record<ControlVerb, string> = {
  stop: 'stopping processes',
  start: 'starting stopped processes',
  restart: 'restarting processes',
  signal: 'sending signals',
};

export const controlUsage: Record<ControlVerb, string> = {
  stop: `Usage: drover stop SLUG\n\nStops a process gracefully; it stays listed and does not restart until drover start SLUG.`,
  start: `Usage: drover start SLUG\n\nStarts a stopped process. (drover start [DIR] [TYPE...] runs an app in the foreground: see drover start --help.)`,
  restart: `Usage: drover restart SLUG\n\nStops a process gracefully and starts it again at once.`,
  signal: `Usage: drover signal SLUG SIGNAL\n\nSends a signal (a name like HUP or SIGHUP, or a number) to the process's whole process group.`,
};

/** stop / start / restart / signal: a POST to the link of that name in the status document. */
export async function control(verb: ControlVerb, argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {}, verb);
  if (values.help) {
    process.stdout.write(`${controlUsage[verb]}\n`);
    return 0;
  }
  const want = verb === 'signal' ? 2 : 1;
  if (positionals.length !== want) throw usageError(verb === 'signal' ? 'expected SLUG SIGNAL' : 'expected one SLUG (see drover ps)', verb);
  const client = new Client();
  const doc = await client.process(positionals[0]);
  let body: Record<string, unknown> = {};
  if (verb === 'signal') {
    const sig = positionals[1];
    body = {
      signal: /^\d+$/.test(sig) ? Number(sig) : sig.toUpperCase().startsWith('SIG') ? sig.toUpperCase() : `SIG${sig.toUpperCase()}`,
    };
  }
  const after = await client.json('POST', linkOf(doc, verb, what[verb]), { body });
  // The same word as ps: a stopped process is "stopped", not the agent's "exited".
  process.stdout.write(`${doc.slug}: ${verb === 'signal' ? `sent ${body.signal}; ` : ''}${after.state ? shownState(after) : 'done'}\n`);
  return 0;
}
