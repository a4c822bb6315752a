// The API's documents are pure functions of plain data: built here from literals, no agent.
import t from 'tap';
import { baseFromHost, type Base } from '../../lib/api/base.js';
import { blobDocument, dataUrl } from '../../lib/api/data.js';
import { envDigest, sourceDigest } from '../../lib/api/digest.js';
import { errorBody } from '../../lib/api/errors.js';
import { metricsDocument } from '../../lib/api/metrics.js';
import { rootDocument } from '../../lib/api/root.js';
import { statusDocument, statusJson, statusUrl, type ProcessView } from '../../lib/api/status.js';
import { liveDetail, sampleDocument, stageDocument } from '../../lib/api/usage.js';
import type { LiveUsage, RunUsage } from '../../lib/os/usage.js';

const base: Base = { http: 'http://agent:8080', ws: 'ws://agent:8080' };
const T0 = Date.UTC(2025, 0, 2, 3, 4, 5);
const iso = (ms: number) => new Date(ms).toISOString();

const live = (at: number, cpuPercent: number): LiveUsage => ({ at, cpuPercent, rss: 2048, processes: 2, utime: 0.5, stime: 0.1 });
const run = (utime: number, maxrss: number): RunUsage => ({ utime, stime: 0, maxrss, method: { cpu: 'wait4', maxrss: 'cgroup-v2' } });
const stage = (runs: number, total: RunUsage | null, last: RunUsage | null) => ({ runs, measured: total ? runs : 0, total, last });

function view(over: Partial<ProcessView> = {}): ProcessView {
  return {
    slug: 'shop.web/0',
    app: 'shop',
    node: 'web/0',
    processType: 'web',
    sourceUrl: 'http://src/shop.tgz',
    env: { SECRET: 'hunter2', PORT_HINT: '1' },
    port: 40001,
    createdAt: new Date(T0),
    startedAt: new Date(T0 + 1000),
    restart: { policy: 'on-failure', delayMs: 100, maxDelayMs: 5000, resetAfterMs: 60_000 },
    state: 'running',
    pid: 4242,
    pgid: 4241,
    restarts: 3,
    errors: ['exited with code 1'],
    stopped: false,
    lastExit: null,
    metrics: { build: stage(0, null, null), run: stage(0, null, null), live: null, samples: [] },
    checksReadiness: true,
    readyAt: null,
    ...over,
  };
}

t.test('baseFromHost uses a plain Host header and falls back on anything else', async (t) => {
  t.strictSame(baseFromHost('example.com:81', '127.0.0.1:8080'), { http: 'http://example.com:81', ws: 'ws://example.com:81' });
  t.strictSame(baseFromHost('[::1]:9', 'x'), { http: 'http://[::1]:9', ws: 'ws://[::1]:9' });
  for (const hostile of [null, undefined, '', 'evil.com/path', 'a b', 'x"><script>', 'user@host']) {
    t.strictSame(baseFromHost(hostile, '127.0.0.1:8080'), { http: 'http://127.0.0.1:8080', ws: 'ws://127.0.0.1:8080' }, String(hostile));
  }
});

t.test('the root document links every entry point from the base', async (t) => {
  t.strictSame(rootDocument(base), {
    create: 'http://agent:8080/create-process',
    list: 'http://agent:8080/list-processes',
    data: 'http://agent:8080/data',
    runs: 'http://agent:8080/runs',
    inspect: 'http://agent:8080/inspect',
    machine: 'http://agent:8080/machine',
    ui: 'http://agent:8080/ui',
  });
});

t.test('the status document of a running process', async (t) => {
  const doc = statusDocument(
    base,
    view({
      metrics: { build: stage(0, null, null), run: stage(0, null, null), live: live(T0 + 2000, 12.5), samples: [] },
      origin: { command: 'npm start', from: 'package.json' },
    }),
  );
  const s = 'shop.web%2F0'; // the slug is encoded once in every link
  t.strictSame(doc, {
    app: 'shop',
    node: 'web/0',
    process_type: 'web',
    slug: 'shop.web/0',
    state: 'running',
    attach: `ws://agent:8080/attach-console/${s}`,
    details: `http://agent:8080/process-status/${s}`,
    status: `http://agent:8080/process-status/${s}`,
    delete: `http://agent:8080/delete-process/${s}`,
    signal: `http://agent:8080/signal-process/${s}`,
    stop: `http://agent:8080/stop-process/${s}`,
    start: `http://agent:8080/start-process/${s}`,
    restart: `http://agent:8080/restart-process/${s}`,
    metrics: `http://agent:8080/process-metrics/${s}`,
    replace: `http://agent:8080/replace-process/${s}`,
    events: `http://agent:8080/process-events/${s}`,
    pid: 4242,
    pgid: 4241,
    port: 40001,
    restarts: 3,
    created_at: iso(T0),
    started_at: iso(T0 + 1000),
    readiness: 'port',
    ready: false,
    ready_at: null,
    release: { id: null, source: 'http://src/shop.tgz' },
    command: 'npm start',
    command_from: 'package.json',
    errors: ['exited with code 1'],
    env_names: ['SECRET', 'PORT_HINT'],
    source_digest: sourceDigest('http://src/shop.tgz'),
    env_digest: envDigest({ SECRET: 'hunter2', PORT_HINT: '1' }),
    stopped: false,
    restart_policy: { policy: 'on-failure', delay_ms: 100, max_delay_ms: 5000, reset_after_ms: 60_000 },
    last_exit: null,
    usage: { cpu_percent: 12.5, rss: 2048, processes: 2, sampled_at: iso(T0 + 2000), method: 'proc' },
  });
  t.equal(statusUrl(base, 'shop.web/0'), doc.status);
  t.notMatch(JSON.stringify(doc), /hunter2/, 'env values never appear');
});

t.test('the status document of an exited process shows how it ended and no start time', async (t) => {
  const doc = statusDocument(
    base,
    view({
      state: 'exited',
      pid: null,
      pgid: null,
      stopped: true,
      lastExit: {
        code: null,
        signal: 'SIGSEGV',
        signum: 11,
        coreDump: true,
        startedAt: T0,
        endedAt: T0 + 1500,
        usage: run(1 / 3, 1e6 + 0.4),
      },
    }),
  );
  t.equal(doc.started_at, null, 'started_at only while running');
  t.equal(doc.usage, null, 'no live sample');
  t.strictSame(doc.last_exit, {
    exit_code: null,
    signal: 'SIGSEGV',
    signum: 11,
    core_dump: true,
    started_at: iso(T0),
    ended_at: iso(T0 + 1500),
    duration: 1.5,
    usage: { utime: 0.333333, stime: 0, maxrss: 1000000, method: { cpu: 'wait4', maxrss: 'cgroup-v2' } },
  });
  t.equal(statusDocument(base, view({ state: 'restarting', startedAt: new Date(T0) })).started_at, null);
});

t.test('statusJson is the document as JSON, rendered again only when something it shows changed', async (t) => {
  const proc = {};
  const v1 = view();
  const json = statusJson(base, v1, proc);
  t.equal(json, JSON.stringify(statusDocument(base, v1)));
  // The same view (a copy with the same values): the remembered text, the very same string.
  t.equal(statusJson(base, { ...v1 }, proc), json, 'unchanged: the same text');
  // Each kind of change shows.
  const changes: Partial<ProcessView>[] = [
    { state: 'exited' },
    { pid: 1 },
    { restarts: 4 },
    { errors: [...v1.errors] }, // a new array, as the actor's assign makes
    { readyAt: new Date(T0 + 5000) },
    { env: { SECRET: 'x' } },
    { origin: { command: 'web', from: 'Procfile' } },
    { archive: 'f'.repeat(64) },
  ];
  for (const change of changes) {
    const v = view(change);
    t.equal(statusJson(base, v, proc), JSON.stringify(statusDocument(base, v)), Object.keys(change)[0]);
  }
  // The live sample is read from the process's one metrics object, which it replaces.
  const metrics = { build: stage(0, null, null), run: stage(0, null, null), live: null as LiveUsage | null, samples: [] };
  const v2 = view({ metrics });
  t.match(statusJson(base, v2, proc), /"usage":null/);
  metrics.live = live(T0 + 2000, 12.5);
  t.match(statusJson(base, { ...v2 }, proc), /"usage":\{"cpu_percent":12.5/, 'a new sample shows');
  // Another Host: other links.
  const other = baseFromHost('other:1', 'x');
  t.equal(statusJson(other, { ...v2 }, proc), JSON.stringify(statusDocument(other, v2)));
  // Another process with the same view has its own memory.
  t.equal(statusJson(base, v2, {}), JSON.stringify(statusDocument(base, v2)));
});

t.test('the metrics document: stage totals, the current sample and recent ones', async (t) => {
  const metrics = {
    build: stage(1, run(2.0000004, 5e6), run(2.0000004, 5e6)),
    run: { runs: 2, measured: 1, total: run(0.25, 3e6), last: null },
    live: live(T0 + 3000, 50),
    samples: [live(T0 + 2000, 40), live(T0 + 3000, 50)],
  };
  t.strictSame(metricsDocument(base, { slug: 'shop.web.0', metrics }, 1000), {
    slug: 'shop.web.0',
    status: 'http://agent:8080/process-status/shop.web.0',
    build: {
      runs: 1,
      measured: 1,
      total: { utime: 2, stime: 0, maxrss: 5e6, method: { cpu: 'wait4', maxrss: 'cgroup-v2' } },
      last: { utime: 2, stime: 0, maxrss: 5e6, method: { cpu: 'wait4', maxrss: 'cgroup-v2' } },
    },
    run: { runs: 2, measured: 1, total: { utime: 0.25, stime: 0, maxrss: 3e6, method: { cpu: 'wait4', maxrss: 'cgroup-v2' } }, last: null },
    current: { cpu_percent: 50, rss: 2048, processes: 2, sampled_at: iso(T0 + 3000), method: 'proc' },
    sample_interval_ms: 1000,
    samples: [
      { at: iso(T0 + 2000), cpu_percent: 40, rss: 2048, processes: 2 },
      { at: iso(T0 + 3000), cpu_percent: 50, rss: 2048, processes: 2 },
    ],
  });
});

t.test('usage shapes: unknown is null, never zero', async (t) => {
  t.equal(liveDetail(null), null);
  t.strictSame(stageDocument(stage(0, null, null)), { runs: 0, measured: 0, total: null, last: null });
  const unknown: RunUsage = { utime: null, stime: null, maxrss: null, method: { cpu: null, maxrss: null } };
  t.strictSame(stageDocument(stage(1, null, unknown)).last, unknown);
  t.strictSame(sampleDocument(live(T0, 0)), { at: iso(T0), cpu_percent: 0, rss: 2048, processes: 2 });
});

t.test('the blob document links itself and its bytes', async (t) => {
  const id = 'ab'.repeat(32);
  t.equal(dataUrl(base), 'http://agent:8080/data');
  t.strictSame(blobDocument(base, { id, size: 12, usedAt: new Date(T0) }), {
    id,
    checksum: `sha256:${id}`,
    size: 12,
    used_at: iso(T0),
    self: `http://agent:8080/data/${id}`,
    blob: `http://agent:8080/data/${id}/blob`,
  });
});

t.test('the error document names the field only when there is one', async (t) => {
  t.strictSame(errorBody(409, 'process "a.b" already exists', 'node'), {
    errors: [{ status: 409, detail: 'process "a.b" already exists', field: 'node' }],
  });
  t.strictSame(errorBody(500, 'internal error'), { errors: [{ status: 500, detail: 'internal error' }] });
});
