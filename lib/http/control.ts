// Process control and metrics: POST /signal-process, /stop-process, /start-process,
// /restart-process (JSON body, answer: the updated status document) and GET /process-metrics.
import type { H3Event } from 'h3';
import { restartProcess, signalProcess, startProcess, stopProcess } from '../agent/control.js';
import type { ManagedProcess, Supervisor } from '../agent/supervisor.js';
import type { Base } from '../api/base.js';
import { metricsDocument } from '../api/metrics.js';
import { processView, statusDocument } from '../api/status.js';
import { readObject } from './body.js';
import { conflictsAs409 } from './errors.js';
import { emptyRequestSchema, signalRequestSchema, stopRequestSchema, validateFields, validateSignal, validateStop } from './validate.js';
import { errorAnswer, JSON_TYPE, NO_PROCESS, SLUG_PARAM, type RouteTable } from './route-table.js';
import { schemaRef } from '../api/schemas.js';

export interface ControlRoutesOptions {
  supervisor: Supervisor;
  base: (event: H3Event) => Base;
  findProcess: (event: H3Event) => ManagedProcess;
  maxBody: number;
}

const statusAnswer = (what: string) => ({ description: what, content: { [JSON_TYPE]: schemaRef('Status') } });
const CONFLICT = errorAnswer("The process's state does not allow it (e.g. no child runs)");
const BAD_BODY = errorAnswer('A field is invalid (named in `field`), or the body is not a JSON object');

export function registerControlRoutes(table: RouteTable, { supervisor, base, findProcess, maxBody }: ControlRoutesOptions): void {
  // Once the child's own pid is known, so `pid` is never the exit helper's.
  const status = async (event: H3Event, proc: ManagedProcess) => {
    await proc.pidSettled();
    return statusDocument(base(event), processView(proc));
  };

  table.route({
    method: 'POST',
    path: '/signal-process/:slug',
    operationId: 'signalProcess',
    tag: 'control',
    summary: 'Send a signal to the whole process group',
    params: [SLUG_PARAM],
    body: { required: true, content: { [JSON_TYPE]: signalRequestSchema } },
    responses: { 200: statusAnswer('Sent: the status document'), 400: BAD_BODY, 404: NO_PROCESS, 409: CONFLICT },
    handler: async (event) => {
      const proc = findProcess(event);
      const sig = validateSignal(await readObject(event, maxBody));
      await proc.pidSettled(); // a child started a moment ago has its group in the actor
      await conflictsAs409('slug', () => signalProcess(proc, sig));
      return status(event, proc);
    },
  });

  table.route({
    method: 'POST',
    path: '/stop-process/:slug',
    operationId: 'stopProcess',
    tag: 'control',
    summary: 'Stop the child gracefully (the stop signal, SIGTERM, then SIGKILL, each after the grace); it stays exited until start',
    params: [SLUG_PARAM],
    body: { required: false, content: { [JSON_TYPE]: stopRequestSchema } },
    responses: { 200: statusAnswer('Stopped: the status document'), 400: BAD_BODY, 404: NO_PROCESS, 409: CONFLICT },
    handler: async (event) => {
      const proc = findProcess(event);
      const opts = validateStop(await readObject(event, maxBody, { optional: true }));
      await conflictsAs409('slug', () => stopProcess(proc, opts));
      await proc.saved(); // so it stays stopped across an agent restart
      return status(event, proc);
    },
  });

  table.route({
    method: 'POST',
    path: '/start-process/:slug',
    operationId: 'startProcess',
    tag: 'control',
    summary: 'Start an exited process (stopped, or finished under its policy)',
    params: [SLUG_PARAM],
    body: { required: false, content: { [JSON_TYPE]: emptyRequestSchema } },
    responses: { 200: statusAnswer('Started: the status document'), 400: BAD_BODY, 404: NO_PROCESS, 409: CONFLICT },
    handler: async (event) => {
      const proc = findProcess(event);
      validateFields(await readObject(event, maxBody, { optional: true }), []);
      await conflictsAs409('slug', () => startProcess(proc));
      await proc.saved();
      return status(event, proc);
    },
  });

  table.route({
    method: 'POST',
    path: '/restart-process/:slug',
    operationId: 'restartProcess',
    tag: 'control',
    summary: 'Graceful stop, then a new child at once (no backoff); forces one rebuild of a remembered failed build',
    params: [SLUG_PARAM],
    body: { required: false, content: { [JSON_TYPE]: stopRequestSchema } },
    responses: { 200: statusAnswer('Restarted: the status document'), 400: BAD_BODY, 404: NO_PROCESS, 409: CONFLICT },
    handler: async (event) => {
      const proc = findProcess(event);
      const opts = validateStop(await readObject(event, maxBody, { optional: true }));
      await conflictsAs409('slug', () => restartProcess(proc, opts));
      return status(event, proc);
    },
  });

  table.route({
    method: 'GET',
    path: '/process-metrics/:slug',
    operationId: 'processMetrics',
    tag: 'control',
    summary: 'Usage totals per stage (build, run), the current sample and the recent samples',
    params: [SLUG_PARAM],
    responses: { 200: { description: 'The metrics document', content: { [JSON_TYPE]: schemaRef('ProcessMetrics') } }, 404: NO_PROCESS },
    handler: (event) => metricsDocument(base(event), processView(findProcess(event)), supervisor.sampler.intervalMs),
  });
}
