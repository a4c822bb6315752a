import t from 'tap';
import type { Test as TestBase } from 'tap';
import { createServer } from 'node:http';
import { readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, attach, testAgent, waitForState } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';
import { liveGroupMembers, listProcesses } from '../../lib/os/proc.js';

const examples = join(import.meta.dirname, '..', '..', 'examples');

async function setup(t: TestBase, overrides = {}) {
  const agent = await testAgent(overrides);
  const archives = await new ArchiveServer().start();
  t.teardown(async () => {
    await agent.close();
    await archives.close();
  });
  const create = async (node: string, sourceUrl: string, extra: Record<string, unknown> = {}) => {
    const r = await api('POST', `${agent.url}/create-process`, {
      app: 'app',
      node,
      process_type: node.split('.')[0],
      source_url: sourceUrl,
      ...extra,
    });
    if (r.status !== 201) throw new Error(`create failed: ${r.status} ${r.text}`);
    return r.json;
  };
  return { agent, archives, create, dir: t.testdir() };
}

t.test('tar.gz, tar and zip archives all run; a GitHub-style root directory is found', async (t) => {
  const { archives, create, dir } = await setup(t);
  const app = writeApp(join(dir, 'src', 'project-main'), { Procfile: 'web: echo "format ok $DYNO"; exec sleep 600\n' });
  const urls = {
    'tar.gz': archives.serve('a.tgz', await pack(join(dir, 'src'), join(dir, 'a.tgz'), 'tar.gz')),
    tar: archives.serve('a.tar', await pack(app, join(dir, 'a.tar'), 'tar')),
    zip: archives.serve('a.zip', await pack(app, join(dir, 'a.zip'), 'zip')),
  };
  let i = 0;
  for (const [format, url] of Object.entries(urls)) {
    const node = `web.${i++}`;
    const proc = await create(node, url);
    const stream = await attach(proc.attach);
    await waitForState(proc.status, 'running');
    await waitFor(() => stream.lines.includes(`format ok ${node}`), `${format} output`);
    t.pass(`${format} archive ran`);
    stream.ws.close();
  }
});

t.test('failures show in errors and are retried until deleted', async (t) => {
  const { archives, create, dir } = await setup(t);
  writeFileSync(join(dir, 'junk.bin'), 'this is not an archive at all, just text');
  const noProcfile = writeApp(join(dir, 'np'), { 'README.md': 'no procfile here\n' });
  const typed = writeApp(join(dir, 'typed'), { Procfile: 'web: sleep 1\nworker: sleep 1\n' });
  const failing = writeApp(join(dir, 'failing'), { Procfile: 'web: sleep 1\n', 'bin/build': '#!/bin/sh\necho "building badly"\nexit 3\n' });
  const cases: [string, string, RegExp][] = [
    ['web.0', `${archives.url}/missing.tgz`, /HTTP 404/],
    ['web.1', archives.serve('junk.bin', join(dir, 'junk.bin')), /not a supported archive/],
    ['web.2', archives.serve('np.tgz', await pack(noProcfile, join(dir, 'np.tgz'))), /no Procfile/],
    [
      'clock.0',
      archives.serve('typed.tgz', await pack(typed, join(dir, 'typed.tgz'))),
      /unknown process type "clock"; the Procfile has: web, worker/,
    ],
    ['web.3', archives.serve('failing.tgz', await pack(failing, join(dir, 'failing.tgz'))), /exited with code 3/],
  ];
  const procs = [];
  for (const [node, url] of cases) procs.push(await create(node, url));
  const buildLines = await attach(procs[4].attach);
  for (let i = 0; i < cases.length; i++) {
    const [, , error] = cases[i];
    // Retried: the same error appears at least twice, and the process is back in the pipeline.
    const doc = await waitForState(procs[i].status, (d) => d.errors.length >= 2 && d.restarts >= 2);
    t.match(doc.errors.at(-1), error, `${cases[i][0]}: ${doc.errors.at(-1)}`);
    t.ok(['downloading', 'building', 'restarting'].includes(doc.state), `still retrying (${doc.state})`);
  }
  await waitFor(() => buildLines.lines.includes('building badly'), 'build output reaches attached clients');
  t.ok((archives.hits.get('/missing.tgz') ?? 0) >= 2, 'download retried');
  for (const p of procs) t.equal((await api('POST', p.delete, {})).status, 200);
});

t.test('a crashing process restarts with growing backoff', async (t) => {
  const { archives, create, dir } = await setup(t, { backoffInitialMs: 300, backoffMaxMs: 5000 });
  const app = writeApp(join(dir, 'crash'), { Procfile: 'web: echo "run $$"; exit 2\n' });
  const proc = await create('web.0', archives.serve('c.tgz', await pack(app, join(dir, 'c.tgz'))));
  const stream = await attach(proc.attach);
  const seen: string[] = [];
  await waitFor(async () => {
    const d = (await api('GET', proc.status)).json;
    if (seen.at(-1) !== d.state) seen.push(d.state);
    return d.restarts >= 4;
  }, 'four restarts');
  const doc = (await api('GET', proc.status)).json;
  t.match(doc.errors.at(-1), /exited with code 2/);
  t.ok(seen.includes('restarting'), `passed through restarting: ${seen.join(',')}`);
  t.ok(stream.lines.filter((l) => l.startsWith('run ')).length >= 4, 'every run printed');
  // Backoff: 0, 300, 600, 1200 ms: four restarts take at least 0.9 s after the first run.
  t.ok(Date.parse(new Date().toISOString()) - Date.parse(doc.created_at) >= 900, 'restarts were spaced by backoff');
});

t.test('delete works in every state and leaves nothing behind', async (t) => {
  const { agent, archives, create, dir } = await setup(t);
  // A download that never finishes, and a build that never finishes.
  const hang = createServer((req, res) => {
    res.writeHead(200, { 'content-length': '1000000' });
    res.write('x');
  });
  await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    hang.closeAllConnections();
    hang.close();
  });
  const hangUrl = `http://127.0.0.1:${(hang.address() as { port: number }).port}/slow.tgz`;
  const slowBuild = writeApp(join(dir, 'slow'), {
    Procfile: 'web: sleep 600\n',
    'bin/build': '#!/bin/sh\necho build-started\nexec sleep 600\n',
  });
  const tree = writeApp(join(dir, 'tree'), { Procfile: 'web: sh -c "sleep 600 & sleep 600 & wait"\n' });
  const ignorer = writeApp(join(dir, 'ignorer'), { Procfile: `web: trap '' TERM; echo stubborn; while true; do sleep 0.1; done\n` });
  const crash = writeApp(join(dir, 'crash'), { Procfile: 'web: exit 1\n' });
  const urls = {
    slow: archives.serve('slow.tgz', await pack(slowBuild, join(dir, 'slow.tgz'))),
    tree: archives.serve('tree.tgz', await pack(tree, join(dir, 'tree.tgz'))),
    ignorer: archives.serve('ign.tgz', await pack(ignorer, join(dir, 'ign.tgz'))),
    crash: archives.serve('crash.tgz', await pack(crash, join(dir, 'crash.tgz'))),
  };

  await t.test('pending', async (t) => {
    const p = await create('web.10', urls.tree);
    t.equal(p.state, 'pending');
    t.equal((await api('POST', p.delete, {})).status, 200);
  });
  await t.test('downloading (cancels the download)', async (t) => {
    const p = await create('web.11', hangUrl);
    await waitForState(p.status, 'downloading');
    t.equal((await api('POST', p.delete, {}, { prefer: 'return=representation' })).json.state, 'deleted');
  });
  await t.test('building (kills the build)', async (t) => {
    const p = await create('web.12', urls.slow);
    const s = await attach(p.attach);
    await waitFor(() => s.lines.includes('build-started'), 'build running');
    const builders = await waitFor(() => {
      const pids = inStateDir(agent.stateDir);
      return pids.length > 0 ? pids : null;
    }, 'the build process in the release dir');
    t.equal((await api('POST', p.delete, {}, { prefer: 'return=representation' })).json.state, 'deleted');
    await waitFor(() => inStateDir(agent.stateDir).length === 0, 'build process gone');
    t.ok(builders.length > 0);
  });
  await t.test('running, with grandchildren', async (t) => {
    const p = await create('web.13', urls.tree);
    const doc = await waitForState(p.status, 'running');
    await waitFor(() => liveGroupMembers(doc.pgid).length >= 4, 'tree started');
    t.equal((await api('POST', p.delete, {})).status, 200);
    t.same(liveGroupMembers(doc.pgid), [], 'grandchildren gone');
  });
  await t.test('running, ignoring SIGTERM: killed after the grace', async (t) => {
    const p = await create('web.14', urls.ignorer);
    const s = await attach(p.attach);
    const doc = await waitForState(p.status, 'running');
    await waitFor(() => s.lines.includes('stubborn'), 'trap installed');
    const t0 = Date.now();
    t.equal((await api('POST', p.delete, {})).status, 200);
    t.ok(Date.now() - t0 >= 2500, 'waited for the grace period');
    t.same(liveGroupMembers(doc.pgid), []);
  });
  await t.test('exited / restarting', async (t) => {
    const p = await create('web.15', urls.crash);
    await waitForState(p.status, (d) => d.restarts >= 2 && (d.state === 'restarting' || d.state === 'exited'));
    t.equal((await api('POST', p.delete, {}, { prefer: 'return=representation' })).json.state, 'deleted');
  });
  t.same((await api('GET', `${agent.url}/list-processes`)).json.processes, []);
});

/** Live processes whose working directory is under `dir` (the agent's releases). */
function inStateDir(dir: string): number[] {
  return listProcesses()
    .filter((p) => p.state !== 'Z')
    .filter((p) => {
      try {
        return readlinkSync(`/proc/${p.pid}/cwd`).startsWith(dir);
      } catch {
        return false;
      }
    })
    .map((p) => p.pid);
}
