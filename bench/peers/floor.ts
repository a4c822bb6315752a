// The parts of a drover start with nothing else around them, each in its own process, so the
// floor scenario can tell how much of "start 1000" the stack the standards prescribe costs
// before drover does anything of its own:
//   node floor.js http      an h3 v2 app on node:http answering create requests with a status document
//   node floor.js actors N  N of drover's process actors (XState v5) from pending to running, no I/O
//   node floor.js spawn N   N `sleep` started by drover's spawn helper, each with its two output streams
//   node floor.js modules   the packages an agent loads (h3, listhen, ws, xstate, yaml, dotenv, tar, yauzl), idle
// Each prints one JSON line on stdout (http: its URL first); see bench/scenarios/floor.ts.
import { readFileSync } from 'node:fs';
import { cpuUsage } from 'node:process';

const [mode, arg] = process.argv.slice(2);
const n = Number(arg ?? 1000);
const out = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);
const cpuS = (from: NodeJS.CpuUsage) => {
  const d = cpuUsage(from);
  return (d.user + d.system) / 1e6;
};

if (mode === 'http') {
  const { H3 } = await import('h3');
  const { toNodeHandler } = await import('h3/node');
  const { createServer } = await import('node:http');
  const { statusDocument } = await import('../../lib/api/status.js');
  const base = { http: 'http://127.0.0.1:0', ws: 'ws://127.0.0.1:0' };
  let seen = 0;
  const doc = (body: { app: string; node: string; process_type: string; source_url: string }) =>
    // drover's own document code, for a process just created: the same bytes a client gets.
    statusDocument(base, {
      slug: `${body.app}.${body.node}`,
      app: body.app,
      node: body.node,
      processType: body.process_type,
      sourceUrl: body.source_url,
      env: {},
      port: 40000 + (seen++ % 20000),
      createdAt: new Date(),
      restart: { policy: 'always', delayMs: 100, maxDelayMs: 30000, resetAfterMs: 60000 },
      state: 'pending',
      pid: null,
      pgid: null,
      restarts: 0,
      errors: [],
      stopped: false,
      lastExit: null,
      metrics: { build: {}, run: {}, live: null, samples: [] },
      checksReadiness: false,
      readyAt: null,
    } as unknown as Parameters<typeof statusDocument>[1]);
  const app = new H3()
    .post('/create-process', async (event) => {
      event.res.status = 201;
      return doc((await event.req.json()) as Parameters<typeof doc>[0]);
    })
    // The status scenario's request, answered with no process behind it.
    .get('/process-status/:slug', (event) => {
      const [a, ...node] = (event.context.params?.slug ?? 'x.y').split('.');
      return doc({ app: a, node: node.join('.'), process_type: 'sleep', source_url: 'file:///app.tgz' });
    });
  const server = createServer(toNodeHandler(app));
  server.listen(0, '127.0.0.1', () => out({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}` }));
} else if (mode === 'actors') {
  const { createActor } = await import('xstate');
  const { processMachine } = await import('../../lib/process/machine.js');
  const c0 = cpuUsage();
  const t0 = performance.now();
  let running = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const actors = Array.from({ length: n }, (_, i) => {
    const actor = createActor(processMachine, {
      input: {
        deps: {
          download: async () => 'archive',
          build: async () => ({ argv: ['sleep', '3600'], cwd: '/', env: {} }),
          // A child that runs until stopped: what the actor holds, without a process.
          start: () => {
            let exit!: (e: unknown) => void;
            const exited = new Promise((r) => (exit = r));
            return {
              pid: 100000 + i,
              exited,
              stop: async () => exit({ code: null, signal: 'SIGTERM', startedAt: 0, endedAt: 0 }),
            } as never;
          },
          backoff: { initialMs: 100, maxMs: 30000, resetAfterMs: 60000 },
          stopGraceMs: 1000,
        },
      },
    });
    let seenRunning = false;
    actor.subscribe((s) => {
      if (!seenRunning && s.value === 'running') {
        seenRunning = true;
        if (++running === n) done();
      }
    });
    actor.start();
    actor.send({ type: 'START' });
    return actor;
  });
  await all;
  out({ wallS: (performance.now() - t0) / 1000, cpuS: cpuS(c0) });
  for (const a of actors) a.stop();
} else if (mode === 'spawn') {
  const { SpawnHelper, findSpawnHelper } = await import('../../lib/os/spawn-helper.js');
  const path = findSpawnHelper();
  if (!path) {
    out({ missing: 'the spawn helper is not built (node native/build.mjs)' });
    process.exit(0);
  }
  const helper = new SpawnHelper(path);
  const c0 = cpuUsage();
  const t0 = performance.now();
  let ready = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  for (let i = 0; i < n; i++) {
    let parts = 0;
    const one = () => ++parts === 3 && ++ready === n && done();
    helper.spawn(
      { argv: ['sleep', '3600'], cwd: '/', env },
      {
        onPid: one,
        onStream: (_fd, s) => {
          s.resume();
          one();
        },
        onCgroupFailed: () => {},
        onFailed: (e) => {
          if (ready < n) throw new Error(e); // at the end, the helper's stop fails the runs it kills
        },
        onExit: () => {},
      },
    );
  }
  await all;
  out({ wallS: (performance.now() - t0) / 1000, cpuS: cpuS(c0) });
  await helper.stop(10_000); // it kills every run it started
} else if (mode === 'modules') {
  for (const m of ['h3', 'h3/node', 'listhen', 'ws', 'xstate', 'yaml', 'dotenv', 'tar', 'yauzl']) await import(m);
  setTimeout(() => {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    out({ rssMB: (Number(m![1]) * 1024) / 1e6 });
  }, 2000);
} else {
  process.stderr.write(`usage: floor.js http | actors N | spawn N | modules\n`);
  process.exit(2);
}
