// A process whose command is an explicit argv rather than a Procfile entry: the supervisor
// builds its release as usual, then runs argv[0] as a real child with no shell in between.
import t from 'tap';
import { agentWithArchives } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

t.test('the supervisor runs an argv spec as a real child, once under restart policy never', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t);
  // The Procfile would fail loudly: the argv, not the entry, must be what runs.
  const sourceUrl = await serveApp('argv', 'job: echo "the Procfile ran"; exit 9\n');
  const script =
    'console.log([process.argv.slice(1).join("|"), require("fs").existsSync("Procfile"), process.env.FROM_SPEC, process.env.FROM_REQUEST].join(" "))';
  const proc = await agent.supervisor.create({
    app: 'argv',
    node: 'job.0',
    processType: 'job',
    sourceUrl,
    env: { FROM_REQUEST: 'request' },
    argv: { kind: 'argv', argv: [process.execPath, '-e', script, '$HOME; `false` *', 'two words'], cwd: '.', env: { FROM_SPEC: 'spec' } },
    restart: { policy: 'never' },
  });
  const lines: string[] = [];
  proc.output.subscribe((stream, line) => stream === 'stdout' && lines.push(line));
  await waitFor(() => proc.actor.getSnapshot().value === 'exited', 'the job to finish', 60_000);
  const ctx = proc.actor.getSnapshot().context;
  t.equal(ctx.lastExit?.code, 0, 'exited cleanly');
  t.equal(ctx.restarts, 0, 'never restarted');
  t.same(ctx.errors, []);
  await waitFor(() => lines.length > 0, 'its output');
  t.same(lines, ['$HOME; `false` *|two words true spec request'], 'arguments passed as given, cwd the release, spec and request env');
  t.notOk(lines.some((l) => l.includes('the Procfile ran')));
  t.equal(agent.supervisor.get('argv.job.0')?.record.argv?.argv[0], process.execPath, 'the spec is part of the saved record');
});

t.test('an ended child is let go while its process waits out the backoff', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t, { backoffInitialMs: 60_000, backoffMaxMs: 60_000 });
  const sourceUrl = await serveApp('gone', 'web: exit 3\n');
  const proc = await agent.supervisor.create({ app: 'gone', node: 'web.0', processType: 'web', sourceUrl, env: {} });
  await waitFor(() => proc.actor.getSnapshot().value === 'restarting', 'the first exit', 60_000);
  t.equal(proc.actor.getSnapshot().context.lastExit?.code, 3);
  // Nothing of the ended child (its streams, line splitters, promises) is held for the next start.
  t.equal(proc.current, null, 'no current child');
  t.equal(proc.readyAt, null);
});
