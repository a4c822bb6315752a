import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, waitForState } from '../helpers/agent.js';
import { spawnAgent } from '../helpers/agent-process.js';
import { readEvents } from '../helpers/events.js';
import { stalledClient } from '../helpers/stalled-client.js';
import { waitFor } from '../helpers/wait.js';

const LINES = 10_000_000;
// Generous: the agent idles at ~60 MB and peaks near 200 MB here; what must not happen is
// growth with the amount of output (10M lines are ~70 MB of text and ~1 GB of events).
const MAX_RSS = 400 * 1024 * 1024;

function rss(pid: number): { now: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  return { now: kb('VmRSS'), peak: kb('VmHWM') };
}

t.test(`${LINES} lines with attached clients that never read: the agent's memory stays bounded, no line is lost`, async (t) => {
  const archives = await new ArchiveServer().start();
  t.teardown(() => archives.close());
  const dir = t.testdir();
  const url = archives.serve(
    'loud.tgz',
    await pack(
      writeApp(join(dir, 'loud'), {
        Procfile: `web: while [ ! -e "$GO" ]; do sleep 0.01; done; seq 1 ${LINES}; exec sleep 600\n`,
      }),
      join(dir, 'loud.tgz'),
    ),
  );
  const agent = await spawnAgent();
  t.teardown(() => agent.proc.kill('SIGKILL'));
  const go = join(dir, 'go');
  const created = await api('POST', `${agent.url}/create-process`, {
    app: 'mem',
    node: 'web.0',
    process_type: 'web',
    source_url: url,
    env: { GO: go },
  });
  const doc = await waitForState(created.json.status, 'running');
  // One plain attach (pushed to) and one replaying from the log (pulled by): neither reads.
  const live = await stalledClient(doc.attach);
  const replay = await stalledClient(`${doc.attach}?since=0`);
  t.teardown(() => {
    live.destroy();
    replay.destroy();
  });
  const base = (await readEvents(`${doc.events}?follow=false`)).events.at(-1).id;
  writeFileSync(go, '');
  let peak = 0;
  const lastId = base + LINES;
  await waitFor(
    async () => {
      peak = Math.max(peak, rss(agent.proc.pid!).now);
      const r = await readEvents(`${doc.events}?follow=false&since=${lastId - 1}`);
      return r.events.find((e) => e.type === 'output');
    },
    'the last line in the event log',
    240_000,
  ).then((last) => {
    t.equal(last.id, lastId, 'every line got an id: none was dropped');
    t.equal(last.text, String(LINES));
  });
  peak = Math.max(peak, rss(agent.proc.pid!).peak);
  t.ok(peak < MAX_RSS, `agent peak RSS ${(peak / 1048576).toFixed(0)} MB < ${MAX_RSS / 1048576} MB`);
  t.equal((await api('GET', doc.status)).json.state, 'running', 'still supervising');
});
