// GET /metrics parsed with a Prometheus text-format parser, its numbers against the status
// documents; OpenMetrics on request; the read-only metrics token; /healthz and /readyz.
import t from 'tap';
// parse-prometheus-text-format ships no types.
// @ts-expect-error -- no declaration file
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { agentWithArchives, api, attach, waitForState } from '../helpers/agent.js';
import { waitFor } from '../helpers/wait.js';

interface Family {
  name: string;
  help: string;
  type: string;
  metrics: { labels?: Record<string, string>; value?: string; buckets?: Record<string, string>; count?: string; sum?: string }[];
}
const parse = parsePrometheusTextFormat as (text: string) => Family[];

async function scrape(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}/metrics`, { headers });
  const text = await res.text();
  return { res, text, families: res.status === 200 ? parse(text) : [] };
}

function value(families: Family[], name: string, labels: Record<string, string> = {}): number | undefined {
  const f = families.find((x) => x.name === name);
  const m = f?.metrics.find((s) => Object.entries(labels).every(([k, v]) => s.labels?.[k] === v));
  return m?.value === undefined ? undefined : Number(m.value);
}

t.test('per-process and agent series match the status documents', async (t) => {
  const { agent, serveApp } = await agentWithArchives(t, { usageSampleMs: 200 });
  // A web process is ready once it accepts connections on $PORT.
  const steady = await serveApp(
    'steady',
    `web: echo up; exec node -e "require('http').createServer((q, r) => r.end()).listen(process.env.PORT)"\n`,
  );
  const crashy = await serveApp('crashy', 'web: echo boom; exit 3\n');
  const create = (node: string, source_url: string) =>
    api('POST', `${agent.url}/create-process`, { app: 'shop', node, process_type: 'web', source_url });
  t.equal((await create('web.0', steady)).status, 201);
  t.equal((await create('web.1', crashy)).status, 201);
  await waitForState(`${agent.url}/process-status/shop.web.0`, (d) => d.state === 'running' && d.usage !== null && d.ready === true);
  await waitForState(`${agent.url}/process-status/shop.web.1`, (d) => d.restarts >= 2 && d.last_exit !== null);
  const client = await attach(`${agent.url.replace('http', 'ws')}/attach-console/shop.web.0`);
  t.teardown(() => client.ws.terminate());

  // A usage sample (every 200 ms) may land between the scrape and the documents read after it:
  // take both again until the running process's usage is the same before and after the scrape.
  const status0 = `${agent.url}/process-status/shop.web.0`;
  const { res, text, families, running } = await waitFor(async () => {
    const before = (await api('GET', status0)).json;
    const scraped = await scrape(agent.url);
    const after = (await api('GET', status0)).json;
    return JSON.stringify(before.usage) === JSON.stringify(after.usage) ? { ...scraped, running: after } : null;
  }, 'a scrape with no usage sample during it');
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  // Read right after the scrape: restarts of the crash loop may have moved on.
  const crashing = (await api('GET', `${agent.url}/process-status/shop.web.1`)).json;

  const l0 = { app: 'shop', node: 'web.0', type: 'web', slug: 'shop.web.0' };
  const l1 = { app: 'shop', node: 'web.1', type: 'web', slug: 'shop.web.1' };
  t.equal(value(families, 'drover_process_state', { ...l0, state: 'running' }), 1);
  t.equal(value(families, 'drover_process_state', { ...l0, state: 'exited' }), 0);
  t.equal(
    families.find((f) => f.name === 'drover_process_state')!.metrics.filter((m) => m.labels?.slug === 'shop.web.0').length,
    7,
    'one series per state',
  );
  t.equal(value(families, 'drover_process_ready', l0), 1, 'ready, as the status document says');
  t.equal(running.ready, true);
  t.equal(value(families, 'drover_process_restarts_total', l0), running.restarts);
  t.equal(value(families, 'drover_process_resident_memory_bytes', l0), running.usage.rss, "RSS is the status document's usage.rss");
  t.ok(value(families, 'drover_process_uptime_seconds', l0)! > 0);
  t.ok(value(families, 'drover_process_cpu_seconds_total', l0)! >= 0);
  t.equal(value(families, 'drover_process_last_exit_code', l0), undefined, 'no exit yet: no series');
  t.ok(value(families, 'drover_process_restarts_total', l1)! >= 2);
  t.ok(value(families, 'drover_process_restarts_total', l1)! <= crashing.restarts);
  t.equal(value(families, 'drover_process_last_exit_code', l1), crashing.last_exit.exit_code);
  // Within one scrape: ready only while running (the crash loop moves on between requests).
  t.ok(value(families, 'drover_process_ready', l1)! <= value(families, 'drover_process_state', { ...l1, state: 'running' })!);

  const list = (await api('GET', `${agent.url}/list-processes`)).json.processes as { state: string }[];
  const byState = (s: string) => value(families, 'drover_processes', { state: s });
  t.equal(
    byState('running')! +
      byState('exited')! +
      byState('restarting')! +
      byState('pending')! +
      byState('downloading')! +
      byState('building')!,
    list.length,
  );
  t.equal(value(families, 'drover_downloads_total', { outcome: 'ok' }), 2, 'two archives, two downloads');
  t.equal(value(families, 'drover_builds_total', { outcome: 'ok' }), 2);
  const dl = families.find((f) => f.name === 'drover_download_duration_seconds')!;
  t.equal(dl.type, 'HISTOGRAM');
  t.equal(Number(dl.metrics[0].count), 2);
  t.equal(value(families, 'drover_websocket_clients', { endpoint: 'attach' }), 1);
  t.ok(value(families, 'drover_event_log_bytes')! > 0);
  t.equal(value(families, 'drover_event_log_dropped_lines_total'), 0);
  t.ok(value(families, 'drover_http_requests_total', { method: 'POST', route: '/create-process', status: '201' })! >= 2);
  t.ok(value(families, 'drover_http_requests_total', { method: 'GET', route: '/process-status/:slug', status: '200' })! >= 1);
  t.ok(value(families, 'drover_nodejs_heap_bytes', { kind: 'used' })! > 0);
  t.ok(value(families, 'drover_event_loop_lag_seconds')! >= 0);
  t.match(text, /^drover_build_info\{version="\d+\.\d+\.\d+[^"]*",commit="[^"]+"\} 1$/m);

  // Unknown paths are one label value, not one per path.
  await api('GET', `${agent.url}/nope/1`);
  await api('GET', `${agent.url}/nope/2`);
  const after = await scrape(agent.url);
  t.equal(value(after.families, 'drover_http_requests_total', { route: 'other', status: '404' }), 2);

  // A deleted process's series go with it.
  await api('POST', `${agent.url}/delete-process/shop.web.1`, {});
  const gone = await scrape(agent.url);
  t.notOk(gone.text.includes('slug="shop.web.1"'));
  client.ws.terminate();
  await waitFor(
    async () => value((await scrape(agent.url)).families, 'drover_websocket_clients', { endpoint: 'attach' }) === 0,
    'the attach client to be counted gone',
  );
});

t.test('OpenMetrics when the scraper asks for it', async (t) => {
  const { agent } = await agentWithArchives(t);
  await api('GET', `${agent.url}/`); // a request counted, so the counter has a sample
  const res = await fetch(`${agent.url}/metrics`, {
    headers: { accept: 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1' },
  });
  t.equal(res.headers.get('content-type'), 'application/openmetrics-text; version=1.0.0; charset=utf-8');
  const text = await res.text();
  t.ok(text.endsWith('# EOF\n'));
  t.match(text, /^# TYPE drover_http_requests counter$/m, 'counter families are named without _total');
  t.match(text, /^drover_http_requests_total\{/m, 'their samples keep it');
});

t.test('the metrics token opens /metrics only; health checks need no token', async (t) => {
  const { agent } = await agentWithArchives(t, { token: 'agent-token-0123456789abcdef', metricsToken: 'metrics-token-0123456789abcdef' });
  const get = (path: string, token?: string) =>
    fetch(`${agent.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} }).then((r) => r.status);
  t.equal(await get('/metrics'), 401);
  t.equal(await get('/metrics', 'wrong-token-0123456789abcdef'), 401);
  t.equal(await get('/metrics', 'metrics-token-0123456789abcdef'), 200);
  t.equal(await get('/metrics', 'agent-token-0123456789abcdef'), 200, 'the agent token works too');
  t.equal(await get('/list-processes', 'metrics-token-0123456789abcdef'), 401, 'read-only: nothing else');
  t.equal(await get('/list-processes', 'agent-token-0123456789abcdef'), 200);
  t.equal(await get('/healthz'), 200);
  t.equal(await get('/readyz'), 200);
});

t.test('--health-auth puts the health checks behind the token', async (t) => {
  const { agent } = await agentWithArchives(t, { token: 'agent-token-0123456789abcdef', healthAuth: true });
  t.equal((await fetch(`${agent.url}/healthz`)).status, 401);
  t.equal((await fetch(`${agent.url}/readyz`)).status, 401);
  const ok = await fetch(`${agent.url}/readyz`, { headers: { authorization: 'Bearer agent-token-0123456789abcdef' } });
  t.equal(ok.status, 200);
});

t.test('/healthz and /readyz answers', async (t) => {
  const { agent } = await agentWithArchives(t, { readyMinFreeBytes: 0 });
  const health = await api('GET', `${agent.url}/healthz`);
  t.equal(health.status, 200);
  t.equal(health.json.status, 'ok');
  t.type(health.json.event_loop_lag_seconds, 'number');
  const ready = await api('GET', `${agent.url}/readyz`);
  t.equal(ready.status, 200);
  t.same(ready.json.status, 'ready');
  t.same(Object.keys(ready.json.checks).sort(), ['disk_space', 'restore', 'state_dir_writable']);
});

t.test('/readyz is 503 when the disk is below the minimum', async (t) => {
  const { agent } = await agentWithArchives(t, { readyMinFreeBytes: Number.MAX_SAFE_INTEGER });
  const full = await api('GET', `${agent.url}/readyz`);
  t.equal(full.status, 503);
  t.equal(full.json.status, 'not ready');
  t.equal(full.json.checks.disk_space.ok, false);
  t.match(full.json.checks.disk_space.detail, /below the minimum/);
  t.equal(full.json.checks.state_dir_writable.ok, true);
});
