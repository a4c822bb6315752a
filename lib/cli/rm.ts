import { parse, usageError } from './args.js';
import { Client, CliError, EXIT, linkOf, type Doc } from './client.js';

export const rmUsage = `Usage: drover rm SLUG... | drover rm --app NAME

Deletes processes: each is stopped gracefully (its whole process group) and removed.

Options:
  --app NAME   every process of app NAME`;

export async function rm(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { app: { type: 'string' } }, 'rm');
  if (values.help) {
    process.stdout.write(`${rmUsage}\n`);
    return 0;
  }
  if ((positionals.length === 0) === (values.app === undefined)) throw usageError('give either SLUGs or --app NAME', 'rm');
  const client = new Client();
  const all = await client.processes();
  let targets: Doc[];
  const missing: string[] = [];
  if (values.app !== undefined) {
    targets = all.filter((d) => d.app === values.app);
    if (targets.length === 0) throw new CliError(`app "${values.app}" has no processes on the agent`, EXIT.notFound);
  } else {
    targets = [];
    for (const slug of new Set(positionals)) {
      const doc = all.find((d) => d.slug === slug);
      if (doc) targets.push(doc);
      else missing.push(slug);
    }
  }
  // Deletes wait for each process to stop: run them side by side.
  // Prefer: return=representation gets the final status document (an agent that ignores it answers {}).
  const results = await Promise.allSettled(
    targets.map((d) =>
      client.json('POST', linkOf(d, 'delete', 'deleting processes'), { body: {}, headers: { prefer: 'return=representation' } }),
    ),
  );
  let failure: CliError | null = null;
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') process.stdout.write(`deleted ${targets[i].slug}${lastRun(r.value)}\n`);
    else failure ??= r.reason instanceof CliError ? r.reason : new CliError(String(r.reason));
  });
  if (failure) throw failure;
  if (missing.length)
    throw new CliError(`no process ${missing.map((s) => `"${s}"`).join(', ')} on the agent (see drover ps)`, EXIT.notFound);
  return 0;
}

/** How the final status document says the last run ended: " (exited with code 0 after 3.2 s)", or "" when it never ran. */
function lastRun(doc: Doc): string {
  const exit = doc.last_exit as { exit_code?: number | null; signal?: string | null; duration?: number | null } | null | undefined;
  if (!exit || typeof exit !== 'object') return '';
  const how = exit.signal
    ? `killed by ${exit.signal}`
    : typeof exit.exit_code === 'number'
      ? `exited with code ${exit.exit_code}`
      : 'ended';
  const ran = typeof exit.duration === 'number' ? ` after ${Number(exit.duration.toPrecision(2))} s` : '';
  return ` (${how}${ran})`;
}
