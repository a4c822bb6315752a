// GET /healthz (liveness) and GET /readyz (readiness), for load balancers, orchestrators and
// systemd-style supervisors. They answer without the token unless --health-auth is set: a
// health check rarely holds secrets, and these say nothing about the processes.
import { randomBytes } from 'node:crypto';
import { statfs, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { H3Event } from 'h3';
import { jsonResponse } from './errors.js';
import { JSON_TYPE, type RouteSpec } from './route-table.js';
import { schemaRef } from '../api/schemas.js';

export interface ReadinessOptions {
  stateDir: string;
  minFreeBytes: number;
  /** Restore finished and the agent is not shutting down. */
  phase: () => 'starting' | 'serving' | 'stopping';
}

interface Check {
  ok: boolean;
  detail?: string;
}

/** A hung disk must not hang the health check: a check that takes longer has failed. */
const CHECK_TIMEOUT_MS = 5000;

function withTimeout(work: Promise<Check>, what: string): Promise<Check> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<Check>((r) => {
    timer = setTimeout(() => r({ ok: false, detail: `${what} did not answer within ${CHECK_TIMEOUT_MS / 1000} s` }), CHECK_TIMEOUT_MS);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

async function writable(dir: string): Promise<Check> {
  const probe = join(dir, `.readyz-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await writeFile(probe, 'ok\n', { mode: 0o600 });
    await unlink(probe);
    return { ok: true };
  } catch (err) {
    await unlink(probe).catch(() => {});
    return { ok: false, detail: `cannot write to ${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
}

async function freeSpace(dir: string, min: number): Promise<Check> {
  try {
    const s = await statfs(dir);
    const free = s.bavail * s.bsize;
    return free >= min
      ? { ok: true, detail: `${free} bytes free` }
      : { ok: false, detail: `${free} bytes free, below the minimum of ${min} (--ready-min-free-bytes)` };
  } catch (err) {
    return { ok: false, detail: `cannot read the free space of ${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
}

/** The readiness document and whether it is ready. */
export async function readiness(
  opts: ReadinessOptions,
): Promise<{ ready: boolean; body: { status: string; checks: Record<string, Check> } }> {
  const phase = opts.phase();
  const [stateDir, disk] = await Promise.all([
    withTimeout(writable(opts.stateDir), 'the state directory'),
    withTimeout(freeSpace(opts.stateDir, opts.minFreeBytes), 'the file system'),
  ]);
  const checks: Record<string, Check> = {
    restore: phase === 'serving' ? { ok: true } : { ok: false, detail: phase === 'starting' ? 'restoring processes' : 'shutting down' },
    state_dir_writable: stateDir,
    disk_space: disk,
  };
  const ready = Object.values(checks).every((c) => c.ok);
  return { ready, body: { status: ready ? 'ready' : 'not ready', checks } };
}

/** The time a macrotask waits for its turn now: how late the event loop answers. */
function loopLag(): Promise<number> {
  const t0 = performance.now();
  return new Promise((r) => setImmediate(() => r((performance.now() - t0) / 1000)));
}

export function healthRoutes(opts: ReadinessOptions): RouteSpec[] {
  const started = Date.now();
  return [
    {
      method: 'GET',
      path: '/healthz',
      operationId: 'healthz',
      tag: 'meta',
      summary: 'Liveness: 200 whenever the event loop answers',
      description: 'Answers without the token unless --health-auth true. A liveness probe that fails here should restart the agent.',
      access: 'health',
      responses: { 200: { description: 'Alive', content: { [JSON_TYPE]: schemaRef('Health') } } },
      handler: async () => ({
        status: 'ok',
        uptime_seconds: Math.round((Date.now() - started) / 10) / 100,
        event_loop_lag_seconds: Math.round((await loopLag()) * 1e6) / 1e6,
      }),
    },
    {
      method: 'GET',
      path: '/readyz',
      operationId: 'readyz',
      tag: 'meta',
      summary: 'Readiness: 200 once restore has finished, the state directory is writable and its disk is not full; else 503',
      description:
        'Answers without the token unless --health-auth true. 503 while shutting down too, so a load balancer stops sending work before the agent goes.',
      access: 'health',
      responses: {
        200: { description: 'Ready', content: { [JSON_TYPE]: schemaRef('Readiness') } },
        503: { description: 'Not ready: the failing checks say why', content: { [JSON_TYPE]: schemaRef('Readiness') } },
      },
      handler: async (_event: H3Event) => {
        const { ready, body } = await readiness(opts);
        return jsonResponse(ready ? 200 : 503, body, { 'cache-control': 'no-store' });
      },
    },
  ];
}
