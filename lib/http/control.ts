// Process control and metrics: POST /signal-process, /stop-process, /start-process,
// /restart-process (JSON body, answer: the updated status document) and GET /process-metrics.
import type { H3, H3Event } from 'h3';
import { restartProcess, signalProcess, startProcess, stopProcess } from '../agent/control.js';
import type { ManagedProcess, Supervisor } from '../agent/supervisor.js';
import type { Base } from '../api/base.js';
import { metricsDocument } from '../api/metrics.js';
import { processView, statusDocument } from '../api/status.js';
import { readObject } from './body.js';
import { conflictsAs409 } from './errors.js';
import { validateFields, validateSignal, validateStop } from './validate.js';

export interface ControlRoutesOptions {
  supervisor: Supervisor;
  base: (event: H3Event) => Base;
  findProcess: (event: H3Event) => ManagedProcess;
  maxBody: number;
}

export function registerControlRoutes(app: H3, { supervisor, base, findProcess, maxBody }: ControlRoutesOptions): void {
  // Once the child's own pid is known, so `pid` is never the exit helper's.
  const status = async (event: H3Event, proc: ManagedProcess) => {
    await proc.pidSettled();
    return statusDocument(base(event), processView(proc));
  };

  app.post('/signal-process/:slug', async (event) => {
    const proc = findProcess(event);
    const sig = validateSignal(await readObject(event, maxBody));
    await proc.pidSettled(); // a child started a moment ago has its group in the actor
    await conflictsAs409('slug', () => signalProcess(proc, sig));
    return status(event, proc);
  });

  app.post('/stop-process/:slug', async (event) => {
    const proc = findProcess(event);
    const opts = validateStop(await readObject(event, maxBody, { optional: true }));
    await conflictsAs409('slug', () => stopProcess(proc, opts));
    await proc.saved(); // so it stays stopped across an agent restart
    return status(event, proc);
  });

  app.post('/start-process/:slug', async (event) => {
    const proc = findProcess(event);
    validateFields(await readObject(event, maxBody, { optional: true }), []);
    await conflictsAs409('slug', () => startProcess(proc));
    await proc.saved();
    return status(event, proc);
  });

  app.post('/restart-process/:slug', async (event) => {
    const proc = findProcess(event);
    const opts = validateStop(await readObject(event, maxBody, { optional: true }));
    await conflictsAs409('slug', () => restartProcess(proc, opts));
    return status(event, proc);
  });

  app.get('/process-metrics/:slug', (event) =>
    metricsDocument(base(event), processView(findProcess(event)), supervisor.sampler.intervalMs),
  );
}
