// Readiness and replace (issue 13): a web process is ready once its $PORT accepts connections;
// a replace builds the new release while the old child answers, then swaps it in, stop-first
// (same port, a gap of about the boot time) or start-first (new port, no gap).
import t from 'tap';
import { join } from 'node:path';
import { agentWithArchives, api, waitForState } from '../helpers/agent.js';
import { pack, writeApp } from '../helpers/archives.js';
import { waitFor } from '../helpers/wait.js';

const BOOT_MS = 700;

// Answers its VERSION after a boot delay; its build (bin/build) takes a while, so the test can
// see the old child answer while it runs.
const server = `const http = require('http');
setTimeout(() => http.createServer((q, s) => s.end(process.env.VERSION_TAG || require('./version.json'))).listen(process.env.PORT), ${BOOT_MS});
process.on('SIGTERM', () => process.exit(0));`;

async function serveVersion(t: any, archives: any, dir: string, version: string, buildSeconds: number) {
  const app = writeApp(join(dir, version), {
    Procfile: 'web: node server.js\n',
    'server.js': server,
    'version.json': JSON.stringify(version),
    'bin/build': `#!/bin/sh\necho building ${version}\nsleep ${buildSeconds}\necho built ${version}\n`,
  });
  return archives.serve(`${version}.tgz`, await pack(app, join(dir, `${version}.tgz`)));
}

/** Polls http://127.0.0.1:PORT/ (the port the status document names, re-read when asked) and counts failures. */
function poller(portOf: () => number) {
  const seen: { at: number; body: string | null }[] = [];
  let stop = false;
  const done = (async () => {
    while (!stop) {
      let body: string | null = null;
      try {
        const r = await fetch(`http://127.0.0.1:${portOf()}/`, { signal: AbortSignal.timeout(10_000) });
        body = await r.text();
      } catch {
        body = null;
      }
      seen.push({ at: Date.now(), body });
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    seen,
    async end() {
      stop = true;
      await done;
    },
  };
}

/** Longest stretch of failed requests, in ms (from the last success before it to the first after). */
function longestGap(seen: { at: number; body: string | null }[]): number {
  let gap = 0;
  let lastOk: number | null = null;
  let failing = false;
  for (const s of seen) {
    if (s.body === null) failing = true;
    else {
      if (failing && lastOk !== null) gap = Math.max(gap, s.at - lastOk);
      failing = false;
      lastOk = s.at;
    }
  }
  return gap;
}

t.test('readiness: a web process is ready once $PORT accepts connections', async (t) => {
  const { agent, archives } = await agentWithArchives(t);
  const dir = t.testdir();
  const url = await serveVersion(t, archives, dir, 'v1', 0);
  const created = await api('POST', `${agent.url}/create-process`, { app: 'r', node: 'web.0', process_type: 'web', source_url: url });
  t.equal(created.status, 201);
  t.equal(created.json.readiness, 'port');
  t.equal(created.json.ready, false);
  const doc = await waitForState(created.json.status, (d) => d.ready === true);
  t.equal(doc.state, 'running');
  t.ok(Date.parse(doc.ready_at) >= Date.parse(doc.started_at), 'ready after started');
  t.equal(doc.release.id.length, 12, 'the release is named by its short content hash');
  const events = await (await fetch(`${doc.events}?follow=false`)).text();
  t.match(events, /"type":"ready"/, 'the event log has a ready event');
});

t.test('readiness: a web process that never binds $PORT is restarted with the R10-style error', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t, { bootTimeoutMs: 800 });
  const url = await serveApp('mute', 'web: node -e "setInterval(() => {}, 1000)"\n');
  const created = await api('POST', `${agent.url}/create-process`, { app: 'r', node: 'web.0', process_type: 'web', source_url: url });
  const doc = await waitForState(created.json.status, (d) => d.restarts >= 1 && d.errors.length > 0);
  t.match(doc.errors[0], /did not bind \$PORT \(\d+\) within 0\.8 s/);
  t.equal(doc.ready, false);
  // A worker (no readiness check) is simply running.
  const worker = await api('POST', `${agent.url}/create-process`, {
    app: 'r',
    node: 'worker.0',
    process_type: 'web',
    source_url: url,
    readiness: { port: false },
  });
  const w = await waitForState(worker.json.status, (d) => d.state === 'running' && d.ready === true);
  t.equal(w.readiness, 'none');
  const bad = await api('POST', `${agent.url}/create-process`, {
    app: 'r',
    node: 'x.0',
    process_type: 'web',
    source_url: url,
    readiness: { port: 'yes' },
  });
  t.equal(bad.status, 400);
  t.equal(bad.json.errors[0].field, 'readiness.port');
});

for (const strategy of ['start-first', 'stop-first'] as const) {
  t.test(`replace ${strategy}: built while the old child answers, then swapped`, async (t) => {
    const { agent, archives } = await agentWithArchives(t);
    const dir = t.testdir();
    const v1 = await serveVersion(t, archives, dir, 'v1', 0);
    const v2 = await serveVersion(t, archives, dir, 'v2', 2);
    const created = await api('POST', `${agent.url}/create-process`, {
      app: 'z',
      node: 'web.0',
      process_type: 'web',
      source_url: v1,
      env: { KEEP: 'yes' },
    });
    const before = await waitForState(created.json.status, (d) => d.ready === true);
    let port = before.port;
    const poll = poller(() => port);
    // Follow the status document's port, as a client of start-first does.
    let following = true;
    const follow = (async () => {
      while (following) {
        const d = await api('GET', created.json.status);
        if (d.status === 200) port = d.json.port;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await waitFor(() => poll.seen.some((s) => s.body === '"v1"' || s.body === 'v1'), 'the old child answering');
    const replaced = api('POST', before.replace, { source_url: v2, strategy });
    // The build prints "building v2" and sleeps: the old child still answers meanwhile.
    await waitFor(async () => {
      const ev = await (await fetch(`${before.events}?follow=false`)).text();
      return ev.includes('building v2');
    }, 'the new build to run');
    const duringBuild = poll.seen.length;
    await waitFor(() => poll.seen.length > duringBuild + 3, 'requests during the build');
    t.ok(
      poll.seen.slice(duringBuild).every((s) => s.body === 'v1'),
      'the old child answers while the new release builds',
    );
    const r = await replaced;
    t.equal(r.status, 200, JSON.stringify(r.json));
    await waitFor(() => poll.seen.slice(-3).every((s) => s.body === 'v2'), 'the new release answering');
    following = false;
    await follow;
    await poll.end();
    const after = r.json;
    t.equal(after.slug, before.slug, 'one actor: same slug');
    t.not(after.pid, before.pid, "the answer's pid is the new child's");
    t.ok(after.restarts >= before.restarts, 'restarts not reset');
    t.same(after.env_names, ['KEEP'], 'env kept when the replace does not change it');
    t.equal(after.replaced.strategy, strategy);
    const failures = poll.seen.filter((s) => s.body === null).length;
    if (strategy === 'start-first') {
      t.equal(failures, 0, 'no request failed');
      t.not(after.port, before.port, 'moved to a new port');
      t.equal(after.replaced.down_ms, 0);
      const ev = await (await fetch(`${before.events}?follow=false`)).text();
      t.match(ev, new RegExp(`"type":"port_changed".*"from":${before.port}.*"to":${after.port}`), 'the port change is logged');
    } else {
      t.equal(after.port, before.port, 'same $PORT');
      const events = (await (await fetch(`${before.events}?follow=false`)).text())
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      const built = Date.parse(events.filter((e) => e.type === 'build_finished').at(-1).time);
      const firstFailure = poll.seen.find((s) => s.body === null)?.at;
      t.ok(firstFailure === undefined || firstFailure >= built, 'no request failed before the new release was built');
      // The app's boot time as this (loaded) machine ran it: from the new child's start to its readiness.
      const boot = events.filter((e) => e.type === 'ready').at(-1).after_ms;
      const gap = longestGap(poll.seen);
      // The bound: below the app's boot time (as this machine ran it) plus 1 s.
      t.ok(gap < boot + 1000, `gap ${gap} ms is below the boot time (${boot} ms) + 1 s, not the build`);
      t.ok(after.replaced.down_ms !== null && after.replaced.down_ms >= BOOT_MS, `down_ms ${after.replaced.down_ms}`);
    }
    // Ids continue in the one event log.
    const ids = (await (await fetch(`${before.events}?follow=false`)).text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).id);
    t.same(
      ids,
      [...ids].sort((a, b) => a - b),
      'event ids continue',
    );
  });
}

t.test('replace: a failing build leaves the old child running and says why', async (t) => {
  const { agent, archives, serveApp } = await agentWithArchives(t);
  const dir = t.testdir();
  const v1 = await serveVersion(t, archives, dir, 'v1', 0);
  const broken = await serveApp('broken', 'worker: true\n');
  const created = await api('POST', `${agent.url}/create-process`, { app: 'f', node: 'web.0', process_type: 'web', source_url: v1 });
  const before = await waitForState(created.json.status, (d) => d.ready === true);
  const r = await api('POST', before.replace, { source_url: broken });
  t.equal(r.status, 422);
  t.match(r.json.errors[0].detail, /old one runs on.*web/);
  const now = (await api('GET', before.status)).json;
  t.equal(now.pid, before.pid, 'the old child runs on');
  t.equal(now.source_digest, before.source_digest);
  const bad = await api('POST', before.replace, { strategy: 'sideways' });
  t.equal(bad.status, 400);
  t.equal(bad.json.errors[0].field, 'strategy');
});
