import { parse, usageError } from './args.js';
import { Client, linkOf } from './client.js';
import { attachEndError, attachStream } from './stream.js';

export const attachUsage = `Usage: drover attach SLUG

Streams a process's output (stdout, stderr and build output, one line at a time) from its
attach link until the process is deleted or you press Ctrl-C.`;

export async function attach(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {}, 'attach');
  if (values.help) {
    process.stdout.write(`${attachUsage}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw usageError('expected one SLUG (see drover ps)', 'attach');
  const client = new Client();
  const doc = await client.process(positionals[0]);
  const end = await attachStream(client, linkOf(doc, 'attach', 'attaching to output'), (line) => process.stdout.write(`${line}\n`));
  const err = attachEndError(end);
  if (err) throw err;
  return 0;
}
