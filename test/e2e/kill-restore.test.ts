import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchiveServer, pack, writeApp } from '../helpers/archives.js';
import { api, waitForState } from '../helpers/agent.js';
import { bin, descendants, spawnAgent, stillAlive } from '../helpers/agent-process.js';
import { consecutive, readEvents } from '../helpers/events.js';
import { waitFor } from '../helpers/wait.js';
import { liveGroupMembers, listProcesses, readProc } from '../../lib/os/proc.js';

/** A small seeded PRNG (mulberry32): the same "random" moments on every run. */
function prng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Process groups, by DROVER_SLUG, among the live descendants of `pid`. */
function groupsBySlug(pid: number): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>();
  for (const d of descendants(pid)) {
    let env: string;
    try {
      env = readFileSync(`/proc/${d.pid}/environ`, 'utf8');
    } catch {
      continue;
    }
    const slug = /(?:^|\0)DROVER_SLUG=([^\0]*)/.exec(env)?.[1];
    const p = readProc(d.pid);
    if (!slug || !p || p.state === 'Z') continue;
    if (!out.has(slug)) out.set(slug, new Set());
    out.get(slug)!.add(p.pgid);
  }
  return out;
}

t.test(
  'kill -9 during a burst of creates and deletes: every 201 comes back, every 200 stays gone, nothing twice, nothing left over',
  async (t) => {
    const random = prng(0x5eed);
    const archives = await new ArchiveServer().start();
    t.teardown(() => archives.close());
    const dir = t.testdir();
    const url = archives.serve(
      'app.tgz',
      await pack(writeApp(join(dir, 'app'), { Procfile: 'web: exec sleep 600\n' }), join(dir, 'app.tgz')),
    );
    const stateDir = mkdtempSync(join(tmpdir(), 'drover-kill-'));
    const args = ['--backoff-initial-ms', '100', '--stop-grace-ms', '2000'];
    let agent = await spawnAgent(args, { stateDir });
    t.teardown(() => {
      agent.proc.kill('SIGKILL');
      rmSync(stateDir, { recursive: true, force: true });
    });

    const slugs = Array.from({ length: 12 }, (_, i) => `k.web.${i}`);
    // What the agent acknowledged last for each slug; 'unknown' when the answer never came.
    const model = new Map<string, 'present' | 'absent' | 'unknown'>(slugs.map((s) => [s, 'absent']));
    const rounds = 4;
    let acknowledged = 0;
    for (let round = 0; round < rounds; round++) {
      const base = agent.url;
      let stop = false;
      const busy = new Set<string>();
      // Four clients, each doing one request at a time on a slug no other client is using, so the
      // answers for a slug come in the order the agent handled them.
      const worker = async () => {
        while (!stop) {
          const free = slugs.filter((s) => !busy.has(s));
          const slug = free[Math.floor(random() * free.length)];
          busy.add(slug);
          const create = random() < 0.6;
          try {
            const r = create
              ? await api('POST', `${base}/create-process`, { app: 'k', node: slug.slice(2), process_type: 'web', source_url: url })
              : await api('POST', `${base}/delete-process/${slug}`, {});
            if (r.status === 201 || (create && r.status === 409)) model.set(slug, 'present');
            else if (r.status === 200 || (!create && r.status === 404)) model.set(slug, 'absent');
            else throw new Error(`unexpected ${r.status} ${r.text}`);
            acknowledged++;
          } catch (err) {
            if (!stop) throw err;
            model.set(slug, 'unknown'); // the agent died with the request in flight
          } finally {
            busy.delete(slug);
          }
        }
      };
      const roundStart = acknowledged;
      const workers = Array.from({ length: 4 }, worker);
      // Some answers first (a loaded machine may give none in the random pause), then a kill at a random moment.
      await waitFor(() => acknowledged >= roundStart + 4, `round ${round}: four requests answered`, 60_000);
      await new Promise((r) => setTimeout(r, 100 + Math.floor(random() * 900)));
      const tree = descendants(agent.proc.pid!);
      stop = true;
      agent.proc.kill('SIGKILL');
      await agent.exit;
      await Promise.all(workers);

      agent = await spawnAgent(args, { stateDir });
      await waitFor(() => stillAlive(tree).length === 0, `round ${round}: no child of the killed agent survives`, 10_000);
      t.same(stillAlive(tree), [], `round ${round}: the old agent's ${tree.length} descendants are gone`);
      const listed = (await api('GET', `${agent.url}/list-processes`)).json.processes.map((p: any) => p.slug);
      t.equal(new Set(listed).size, listed.length, `round ${round}: no slug listed twice`);
      for (const [slug, state] of model) {
        if (state === 'present') t.ok(listed.includes(slug), `round ${round}: ${slug} got its 201 and is back`);
        if (state === 'absent') t.notOk(listed.includes(slug), `round ${round}: ${slug} got its 200 and stays gone`);
      }
    }
    t.ok(acknowledged >= rounds * 4, `${acknowledged} requests were answered before the kills`);

    // Let everything settle, then check the final state in depth.
    const listed = (await api('GET', `${agent.url}/list-processes`)).json.processes;
    for (const p of listed) await waitForState(p.status, 'running');
    await waitFor(() => {
      const groups = groupsBySlug(agent.proc.pid!);
      return listed.every((p: any) => groups.get(p.slug)?.size === 1);
    }, 'one child per process').catch(() => {}); // the assertions below say which one
    const groups = groupsBySlug(agent.proc.pid!);
    for (const p of listed) {
      const n = groups.get(p.slug)?.size ?? 0;
      t.equal(n, 1, `${p.slug}: exactly one process group runs${n === 1 ? '' : ` (status: ${(await api('GET', p.status)).text})`}`);
      const events = (await readEvents(`${p.events}?follow=false`)).events;
      t.ok(
        events.length > 0 && consecutive(events.map((e) => e.id)),
        `${p.slug}: event ids continue without gap or repeat (${events.length} events)`,
      );
      t.ok(
        events.some((e) => e.type === 'agent_restarted'),
        `${p.slug}: the restart is in its log`,
      );
    }
    t.same(
      [...groups.keys()].filter((s) => !listed.some((p: any) => p.slug === s)),
      [],
      'no child runs for a process that is not listed',
    );
  },
);

t.test('leftover process groups of an agent that died hard are swept at start', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-sweep-'));
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  // A group as an agent would have left it, with no watchdog to end it.
  const leftover = spawn('/bin/sh', ['-c', 'sleep 600 & exec sleep 600'], { detached: true, stdio: 'ignore' });
  t.teardown(() => {
    try {
      process.kill(-leftover.pid!, 'SIGKILL');
    } catch {
      // swept
    }
  });
  await waitFor(() => liveGroupMembers(leftover.pid!).length === 2, 'leftover group running');
  const record = { pgid: leftover.pid!, starttime: readProc(leftover.pid!)!.starttime, slug: 'old.web.0', kind: 'child' };
  writeFileSync(join(stateDir, 'groups.json'), JSON.stringify([record]));
  const agent = await spawnAgent([], { stateDir });
  t.teardown(() => agent.proc.kill('SIGKILL'));
  t.same(liveGroupMembers(leftover.pid!, listProcesses()), [], 'killed before the agent listens');
  t.match(agent.stderr(), /killed 1 process group\(s\) left behind by a previous agent/);
  agent.proc.kill('SIGTERM');
  t.equal((await agent.exit).code, 0);
});

t.test('an unusable state directory: one line, exit 1', async (t) => {
  const dir = t.testdir({ file: 'x' });
  const run = (stateDir: string) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, [bin, 'serve', '--port', '0', '--state-dir', stateDir], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      p.stderr.on('data', (c) => (stderr += c));
      p.on('exit', (code) => resolve({ code, stderr }));
    });
  const r = await run(join(dir, 'file', 'state'));
  t.equal(r.code, 1);
  t.equal(r.stderr, `drover: state directory ${join(dir, 'file', 'state')} is not usable: a path component is not a directory (ENOTDIR)\n`);
  const bad = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [bin, 'serve', '--events-max-bytes', '1000'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (c) => (stderr += c));
    p.on('exit', (code) => resolve({ code, stderr }));
  });
  t.equal(bad.code, 2);
  t.match(bad.stderr, /setting "events_max_bytes" must be an integer >= 1048576, got "1000"/);
});
