// GET /metrics: the agent's series for Prometheus. Per-process series are read at scrape time
// from what the agent already holds (each actor's snapshot, the sampler's last figures), in one
// pass over the processes: nothing is sampled or stored for them between scrapes.
//
// Cardinality: per-process series carry app, node, type and slug (slug is app.node, there for
// joins with the API), one set per live process; a deleted process's series vanish. Every other
// label has a fixed set of values: state (the seven machine states), stage/outcome, method,
// route (the route table's path templates, "other" for anything else), status code, endpoint.
//
// A feature registers its own series where it lives, in one line, on `agent.metrics` (the
// Registry of lib/os/prometheus.ts), e.g. `metrics.counter('drover_callback_deliveries_total',
// 'Callback deliveries, by result', ['result'])`; it is in the next scrape.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { H3Event } from 'h3';
import type { CallbackObserver } from '../agent/callbacks.js';
import type { Runs } from '../agent/runs.js';
import type { Supervisor } from '../agent/supervisor.js';
import { STATES } from '../process/machine.js';
import { LabelSet, negotiateFormat, OPENMETRICS_CONTENT_TYPE, Registry, TEXT_CONTENT_TYPE, type Histogram } from '../os/prometheus.js';
import type { EventLogs } from '../store/event-log/registry.js';
import type { RouteSpec, RouteTable } from './route-table.js';
import { version } from '../release/version.js';
import { buildInfo } from '../release/build-info.js';

type NodeHandler = (req: IncomingMessage, res: ServerResponse) => unknown;

/** Seconds: downloads and builds take from a moment to many minutes. */
const STAGE_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

export interface ClientMeter {
  opened(endpoint: string): void;
  closed(endpoint: string): void;
  /** A client dropped for reading too slowly. */
  dropped(endpoint: string): void;
}

export interface AgentMetrics {
  registry: Registry;
  /** The route table whose paths label HTTP requests; until given, every request is "other". */
  routes(table: RouteTable): void;
  /** Wraps the node handler: counts every request (gate refusals included) by route and status. */
  http(handler: NodeHandler): NodeHandler;
  /** For ReleaseCache's `observe`. */
  stage(stage: 'download' | 'build', outcome: 'ok' | 'failed' | 'aborted', seconds: number): void;
  clients: ClientMeter;
  /** Installs the per-process and store series once the supervisor exists. */
  watch(supervisor: Supervisor, logs: EventLogs): void;
  close(): void;
}

export function createAgentMetrics(): AgentMetrics {
  let table: RouteTable | null = null;
  const registry = new Registry();
  const started = Date.now();
  const info = buildInfo();
  registry.collector('drover_build_info', 'The running drover: version and commit (always 1)', 'gauge', ['version', 'commit'], (emit) =>
    emit({ version: version(), commit: info.commit }, 1),
  );

  const requests = registry.counter('drover_http_requests_total', 'HTTP requests answered, by method, route and status', [
    'method',
    'route',
    'status',
  ]);
  const latency: Histogram = registry.histogram(
    'drover_http_request_duration_seconds',
    'Time to answer an HTTP request (to the end of the body; streams count until they end), by method and route',
    ['method', 'route'],
  );
  const downloads = registry.counter('drover_downloads_total', 'Archive downloads (shared ones count once), by outcome', ['outcome']);
  const downloadTime = registry.histogram('drover_download_duration_seconds', 'Time of each archive download', [], STAGE_BUCKETS);
  const builds = registry.counter('drover_builds_total', 'Release builds (unpack and build steps; cached ones not counted), by outcome', [
    'outcome',
  ]);
  const buildTime = registry.histogram('drover_build_duration_seconds', 'Time of each release build', [], STAGE_BUCKETS);
  const wsClients = registry.gauge('drover_websocket_clients', 'Connected WebSocket clients, by endpoint (attach, inspect)', ['endpoint']);
  const wsDropped = registry.counter(
    'drover_websocket_slow_clients_dropped_total',
    'WebSocket and event-stream clients disconnected for reading too slowly, by endpoint',
    ['endpoint'],
  );
  for (const endpoint of ['attach', 'inspect']) wsClients.set({ endpoint }, 0);

  // The event loop's delay, as measured by Node over the last scrape interval.
  const loop = monitorEventLoopDelay({ resolution: 20 });
  loop.enable();
  // Max before mean: reading the mean starts the next interval.
  registry.gauge('drover_event_loop_lag_max_seconds', 'Largest event-loop delay since the previous scrape', [], () => {
    const max = loop.count > 0 ? loop.max / 1e9 : 0;
    return Number.isFinite(max) ? max : 0;
  });
  registry.gauge('drover_event_loop_lag_seconds', 'Mean event-loop delay since the previous scrape', [], () => {
    const mean = loop.count > 0 ? loop.mean / 1e9 : 0;
    loop.reset();
    return Number.isFinite(mean) ? mean : 0;
  });
  registry.collector('drover_nodejs_heap_bytes', "The agent's V8 heap, used and total", 'gauge', ['kind'], (emit) => {
    const m = process.memoryUsage();
    emit({ kind: 'used' }, m.heapUsed);
    emit({ kind: 'total' }, m.heapTotal);
  });
  registry.gauge('process_resident_memory_bytes', "The agent's resident memory", [], () => process.memoryUsage.rss());
  registry.collector('process_cpu_seconds_total', "The agent's own CPU time (user + system), in seconds", 'counter', [], (emit) => {
    const u = process.cpuUsage();
    emit({}, (u.user + u.system) / 1e6);
  });
  registry.gauge('process_start_time_seconds', 'When the agent started, in seconds since the epoch', [], () => started / 1000);

  const label = (req: IncomingMessage) => {
    const path = (req.url ?? '/').split('?')[0];
    const upgrade = (req.headers.upgrade ?? '').toLowerCase() === 'websocket';
    return table?.match(req.method ?? 'GET', path, upgrade) ?? 'other';
  };
  const methodLabel = (m: string | undefined) =>
    m && ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'CONNECT'].includes(m) ? m : 'other';

  return {
    registry,
    routes(t) {
      table = t;
    },
    http: (handler) => (req, res) => {
      const t0 = performance.now();
      res.once('close', () => {
        const route = label(req);
        const method = methodLabel(req.method);
        requests.inc({ method, route, status: String(res.statusCode) });
        latency.observe({ method, route }, (performance.now() - t0) / 1000);
      });
      return handler(req, res);
    },
    stage(stage, outcome, seconds) {
      (stage === 'download' ? downloads : builds).inc({ outcome });
      if (outcome !== 'aborted') (stage === 'download' ? downloadTime : buildTime).observe({}, seconds);
    },
    clients: {
      opened: (endpoint) => wsClients.inc({ endpoint }),
      closed: (endpoint) => wsClients.dec({ endpoint }),
      dropped: (endpoint) => wsDropped.inc({ endpoint }),
    },
    watch(supervisor, logs) {
      watchProcesses(registry, supervisor, logs);
    },
    close() {
      loop.disable();
    },
  };
}

/** Callback POSTs: each attempt by result, retries, and how each delivery ended. */
export function callbackMetrics(registry: Registry): CallbackObserver {
  const attempts = registry.counter(
    'drover_callback_attempts_total',
    'Callback POSTs, by result (ok: 2xx; rejected: a 4xx not retried; retryable: 5xx, 408, 429; error: no answer)',
    ['result'],
  );
  const retries = registry.counter('drover_callback_retries_total', 'Callback POSTs tried again after a failed one', []);
  const deliveries = registry.counter(
    'drover_callback_deliveries_total',
    'Callback deliveries ended, by outcome (delivered, rejected, given_up)',
    ['outcome'],
  );
  for (const result of ['ok', 'rejected', 'retryable', 'error']) attempts.inc({ result }, 0);
  for (const outcome of ['delivered', 'rejected', 'given_up']) deliveries.inc({ outcome }, 0);
  retries.inc({}, 0);
  return {
    attempt: (result) => attempts.inc({ result }),
    retry: () => retries.inc({}),
    delivery: (outcome) => deliveries.inc({ outcome }),
  };
}

/** The run queue: runs waiting for a slot and runs holding one. */
export function runQueueMetrics(registry: Registry, runs: Runs): void {
  registry.gauge('drover_queue_length', 'Runs waiting in the queue for a slot', [], () => runs.queueState().queued.length);
  registry.gauge('drover_runs_active', 'Runs building or executing (holding a slot)', [], () => runs.queueState().running);
}

const STATE_LABELS = Object.fromEntries(STATES.map((s) => [s, { state: s }])) as Record<string, { state: string }>;

function watchProcesses(registry: Registry, supervisor: Supervisor, logs: EventLogs): void {
  const LABELS = ['app', 'node', 'type', 'slug'];
  // One pass per scrape builds every per-process family: the first collector reads, the rest
  // reuse it; rendering is synchronous, so a microtask marks the end of the scrape.
  let pass: Row[] | null = null;
  // A process's labels never change: rendered once for its lifetime.
  const labelSets = new WeakMap<object, LabelSet>();
  interface Row {
    labels: LabelSet;
    state: string;
    restarts: number;
    running: boolean;
    ready: boolean;
    uptime: number;
    cpu: number | null;
    rss: number | null;
    exitCode: number | null;
  }
  const rows = (): Row[] => {
    if (pass) return pass;
    const now = Date.now();
    const out: Row[] = [];
    for (const p of supervisor.list()) {
      const snap = p.actor.getSnapshot();
      const ctx = snap.context;
      const m = p.metrics;
      const running = snap.value === 'running';
      const finished = m.run.total ? (m.run.total.utime ?? 0) + (m.run.total.stime ?? 0) : 0;
      const live = running && m.live ? m.live.utime + m.live.stime : 0;
      let labels = labelSets.get(p);
      if (!labels) labelSets.set(p, (labels = new LabelSet({ app: p.app, node: p.node, type: p.processType, slug: p.slug })));
      out.push({
        labels,
        state: snap.value,
        restarts: ctx.restarts,
        running,
        ready: running && p.readyAt !== null,
        uptime: running && p.startedAt ? Math.max(0, (now - p.startedAt.getTime()) / 1000) : 0,
        cpu: m.run.total || (running && m.live) ? Math.round((finished + live) * 1e6) / 1e6 : null,
        rss: running && m.live ? m.live.rss : null,
        exitCode: ctx.lastExit?.code ?? null,
      });
    }
    pass = out;
    queueMicrotask(() => (pass = null));
    return out;
  };
  registry.collector(
    'drover_process_state',
    'The state of each process: 1 for its state, 0 for the others',
    'gauge',
    [...LABELS, 'state'],
    (emit) => {
      for (const r of rows()) for (const s of STATES) emit(r.labels, r.state === s ? 1 : 0, STATE_LABELS[s]);
    },
  );
  registry.collector('drover_process_restarts_total', 'Restarts of each process so far', 'counter', LABELS, (emit) => {
    for (const r of rows()) emit(r.labels, r.restarts);
  });
  registry.collector(
    'drover_process_ready',
    'Whether each process is ready (1): running and, for web processes and those with a readiness check, accepting connections on $PORT',
    'gauge',
    LABELS,
    (emit) => {
      for (const r of rows()) emit(r.labels, r.ready ? 1 : 0);
    },
  );
  registry.collector(
    'drover_process_uptime_seconds',
    'Seconds since the current child started; 0 when none runs',
    'gauge',
    LABELS,
    (emit) => {
      for (const r of rows()) emit(r.labels, r.uptime);
    },
  );
  registry.collector(
    'drover_process_cpu_seconds_total',
    'CPU seconds (user + system) of the process tree over every run: finished runs plus the current one as last sampled',
    'counter',
    LABELS,
    (emit) => {
      for (const r of rows()) if (r.cpu !== null) emit(r.labels, r.cpu);
    },
  );
  registry.collector(
    'drover_process_resident_memory_bytes',
    'Resident memory of the running process tree, as last sampled (absent when none runs or before the first sample)',
    'gauge',
    LABELS,
    (emit) => {
      for (const r of rows()) if (r.rss !== null) emit(r.labels, r.rss);
    },
  );
  registry.collector(
    'drover_process_last_exit_code',
    'Exit code of the last run (absent before the first exit, or when it was killed by a signal)',
    'gauge',
    LABELS,
    (emit) => {
      for (const r of rows()) if (r.exitCode !== null) emit(r.labels, r.exitCode);
    },
  );
  registry.collector('drover_processes', 'Processes by state', 'gauge', ['state'], (emit) => {
    const counts = new Map<string, number>(STATES.map((s) => [s, 0]));
    for (const p of supervisor.list()) {
      const s = p.actor.getSnapshot().value;
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    for (const [state, n] of counts) emit({ state }, n);
  });
  registry.gauge('drover_event_log_bytes', 'Bytes of every event log on disk (live and retained processes)', [], () => {
    let n = 0;
    for (const log of logs.all()) n += log.diskBytes;
    return n;
  });
  registry.collector(
    'drover_event_log_dropped_lines_total',
    'Output lines dropped because an event log could not be written fast enough',
    'counter',
    [],
    (emit) => emit({}, logs.droppedLines),
  );
  registry.gauge('drover_usage_sampled_processes', 'Process trees the usage sampler watches', [], () => supervisor.sampler.watching);
}

/** The /metrics route; `access: 'metrics'` lets the read-only metrics token in as well as the agent token. */
export function metricsRoute(metrics: AgentMetrics): RouteSpec {
  return {
    method: 'GET',
    path: '/metrics',
    operationId: 'metrics',
    tag: 'meta',
    summary: 'Prometheus metrics: text format 0.0.4, or OpenMetrics 1.0 when Accept asks for application/openmetrics-text',
    access: 'metrics',
    params: [
      {
        name: 'Accept',
        in: 'header',
        description: 'application/openmetrics-text for OpenMetrics; anything else gets the text format 0.0.4',
        schema: { type: 'string' },
      },
    ],
    responses: {
      200: {
        description: 'The series',
        content: { 'text/plain; version=0.0.4': { type: 'string' }, 'application/openmetrics-text; version=1.0.0': { type: 'string' } },
      },
    },
    handler: (event: H3Event) => {
      const format = negotiateFormat(event.req.headers.get('accept'));
      return new Response(metrics.registry.render(format), {
        headers: {
          'content-type': format === 'openmetrics' ? OPENMETRICS_CONTENT_TYPE : TEXT_CONTENT_TYPE,
          'cache-control': 'no-store',
        },
      });
    },
  };
}
