// JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of every document this layer builds. They
// sit beside the documents so a change to one is a change to the other: the route table
// (http/route-table.ts) puts them in GET /openapi.json, and test/e2e/openapi.test.ts checks
// real answers against them. Documents are closed (additionalProperties: false) so a new field
// that is not described here fails that test instead of drifting.
import { STATES } from '../process/machine.js';

export type Schema = Record<string, unknown>;

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
const nullable = (s: Schema): Schema => ({ anyOf: [s, { type: 'null' }] });
const url: Schema = { type: 'string', format: 'uri' };
const time: Schema = { type: 'string', format: 'date-time' };
const int: Schema = { type: 'integer' };
const num: Schema = { type: 'number' };
const str: Schema = { type: 'string' };
const closed = (properties: Record<string, Schema>, required = Object.keys(properties)): Schema => ({
  type: 'object',
  properties,
  required,
  additionalProperties: false,
});

const blobFields: Record<string, Schema> = {
  id: { type: 'string', pattern: '^[0-9a-f]{64}$' },
  checksum: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' },
  size: int,
  used_at: time,
  self: url,
  blob: url,
};

const usageMethod: Schema = { enum: ['cgroup-v2', 'cgroup-v1', 'wait4', 'proc', null] };

/** The status document's fields: one process, its links and its facts. */
const statusFields: Record<string, Schema> = {
  app: str,
  node: str,
  process_type: str,
  slug: str,
  state: ref('ProcessState'),
  attach: { type: 'string', format: 'uri', description: 'ws:// URL of the output WebSocket' },
  details: url,
  status: url,
  delete: url,
  signal: url,
  stop: url,
  start: url,
  restart: url,
  metrics: url,
  replace: { ...url, description: 'POST: swap to a new release (source and/or env), built while the old child runs' },
  events: url,
  pid: nullable(int),
  pgid: nullable(int),
  port: int,
  restarts: int,
  created_at: time,
  started_at: nullable(time),
  readiness: { enum: ['port', 'none'], description: 'port: ready once $PORT accepts connections; none: ready while running' },
  ready: { type: 'boolean' },
  ready_at: nullable(time),
  release: ref('Release'),
  command: { ...nullable(str), description: 'what the current (or last) child runs; null before the first start' },
  command_from: {
    enum: ['Procfile', 'package.json', 'argv', null],
    description: 'package.json: no Procfile, so `web: npm start` (the app has a start script)',
  },
  errors: { type: 'array', items: str },
  env_names: { type: 'array', items: str },
  source_digest: { type: 'string', pattern: '^[0-9a-f]{64}$' },
  env_digest: { type: 'string', pattern: '^[0-9a-f]{64}$' },
  stopped: { type: 'boolean' },
  restart_policy: closed({ policy: { enum: ['always', 'on-failure', 'never'] }, delay_ms: int, max_delay_ms: int, reset_after_ms: int }),
  last_exit: ref('LastExit'),
  usage: ref('LiveUsage'),
};

/** Every named schema, as `components.schemas` of the OpenAPI document. */
export const schemas: Record<string, Schema> = {
  Error: {
    ...closed({
      errors: {
        type: 'array',
        minItems: 1,
        items: closed({ status: int, detail: str, field: str }, ['status', 'detail']),
      },
    }),
    description: 'Every refused request: the status, what is wrong, and the request field at fault when there is one.',
  },
  Root: closed({ create: url, list: url, data: url, runs: url, inspect: url, machine: url, ui: url }),
  RunUsage: nullable(
    closed({
      utime: nullable(num),
      stime: nullable(num),
      maxrss: nullable(int),
      method: closed({ cpu: usageMethod, maxrss: usageMethod }),
    }),
  ),
  LastExit: nullable(
    closed(
      {
        exit_code: nullable(int),
        signal: nullable(str),
        signum: nullable(int),
        core_dump: { type: ['boolean', 'null'] },
        started_at: time,
        ended_at: time,
        duration: num,
        error: str,
        usage: ref('RunUsage'),
      },
      ['exit_code', 'signal', 'signum', 'core_dump', 'started_at', 'ended_at', 'duration', 'usage'],
    ),
  ),
  LiveUsage: nullable(closed({ cpu_percent: num, rss: int, processes: int, sampled_at: time, method: { const: 'proc' } })),
  ProcessState: { enum: [...STATES] },
  Status: closed(statusFields),
  ReplacedStatus: {
    ...closed({
      ...statusFields,
      replaced: closed({
        strategy: { enum: ['stop-first', 'start-first'] },
        changed: { type: 'array', items: str, description: '"source", "env NAME" (names only)' },
        from_port: int,
        to_port: int,
        down_ms: nullable(int),
      }),
    }),
    description: 'The status document after a replace, and what was done: `down_ms` is the time no child served (0 for start-first)',
  },
  Release: {
    ...closed({ id: nullable({ type: 'string', pattern: '^[0-9a-f]{12}$' }), source: str }),
    description:
      "Which release runs: the archive's short content hash (null before the first download) and its source URL (credentials and query cut)",
  },
  ProcessList: closed({ processes: { type: 'array', items: ref('Status') } }),
  Deleted: { type: 'object', maxProperties: 0, description: '`{}`' },
  StageTotals: closed({ runs: int, measured: int, total: ref('RunUsage'), last: ref('RunUsage') }),
  ProcessMetrics: closed({
    slug: str,
    status: url,
    build: ref('StageTotals'),
    run: ref('StageTotals'),
    current: ref('LiveUsage'),
    sample_interval_ms: int,
    samples: {
      type: 'array',
      items: closed({ at: time, cpu_percent: num, rss: int, processes: int }),
    },
  }),
  Blob: closed(blobFields),
  BlobUpload: closed({ ...blobFields, reused: { type: 'boolean', description: 'the same bytes were already held' } }),
  BlobList: closed({ data: { type: 'array', items: ref('Blob') } }),
  Machine: closed({
    id: str,
    initial: str,
    states: { type: 'array', items: closed({ name: str, type: str, invokes: { type: 'array', items: str } }) },
    transitions: {
      type: 'array',
      items: closed({ source: str, target: str, event: str, label: str, guard: nullable(str) }),
    },
    definition: { type: 'object' },
  }),
  Event: {
    type: 'object',
    description: 'One line of a process event log (NDJSON), or the data of one Server-Sent Event.',
    properties: { id: { type: 'integer', minimum: 1 }, time, type: str },
    required: ['id', 'time', 'type'],
  },
  InspectionRecord: {
    oneOf: [
      closed({
        type: { const: 'transition' },
        slug: str,
        from: nullable(str),
        to: str,
        event: str,
        time,
        since: time,
        pid: nullable(int),
        restarts: int,
        last_error: nullable(str),
      }),
      closed({ type: { const: 'ready' }, slug: str, time, pid: nullable(int), port: int, after_ms: int }),
      closed({
        type: { const: 'snapshot' },
        time,
        processes: {
          type: 'array',
          items: closed({ slug: str, state: str, since: time, pid: nullable(int), restarts: int, last_error: nullable(str) }),
        },
      }),
    ],
  },
  Health: closed({ status: { const: 'ok' }, uptime_seconds: num, event_loop_lag_seconds: num }),
  Readiness: closed({
    status: { enum: ['ready', 'not ready'] },
    checks: {
      type: 'object',
      additionalProperties: closed({ ok: { type: 'boolean' }, detail: str }, ['ok']),
    },
  }),
};

export { ref as schemaRef };
