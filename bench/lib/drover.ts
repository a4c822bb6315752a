import type { AgentProcess } from './agent.js';
import { json, pool } from './http.js';
import { until } from './wait.js';

/** The parts of drover's status document the bench follows (links, never built URLs). */
export interface StatusDoc {
  slug: string;
  state: string;
  status: string;
  attach: string;
  delete: string;
  pid: number | null;
  restarts: number;
  errors: string[];
  /** Present once the event log (issue 3) is on main. */
  events?: string;
  /** Present once metrics sampling (issue 4) is on main. */
  usage?: unknown;
  metrics?: string;
}

export interface CreateBody {
  app: string;
  node: string;
  process_type: string;
  source_url: string;
  env?: Record<string, string>;
}

export function createProcess(agent: AgentProcess, body: CreateBody): Promise<StatusDoc> {
  return json<StatusDoc>('POST', agent.links.create, body);
}

/** Sends `bodies.length` create requests, `concurrency` at a time, as an orchestrator would. */
export async function createMany(agent: AgentProcess, bodies: CreateBody[], concurrency = 16): Promise<StatusDoc[]> {
  const docs: StatusDoc[] = new Array(bodies.length);
  await pool(bodies.length, concurrency, async (i) => {
    docs[i] = await createProcess(agent, bodies[i]);
  });
  return docs;
}

export function listProcesses(agent: AgentProcess): Promise<StatusDoc[]> {
  return json<{ processes: StatusDoc[] }>('GET', agent.links.list).then((b) => b.processes);
}

/**
 * Polls the listing until at least `count` processes are `running`. Each listing of 1000
 * processes costs the agent ~10 ms, so with a `last` hint (the process created last, usually
 * the last to start) that one's status is polled first and the listing only after.
 */
export async function untilRunning(agent: AgentProcess, count: number, last?: StatusDoc, timeoutMs = 120_000): Promise<StatusDoc[]> {
  if (last) await untilState(last, 'running', timeoutMs);
  return until(
    async () => {
      const procs = await listProcesses(agent);
      return procs.filter((p) => p.state === 'running').length >= count ? procs : null;
    },
    `${count} processes to be running`,
    timeoutMs,
    5,
  );
}

export async function untilState(doc: StatusDoc, state: string, timeoutMs = 60_000, intervalMs = 5): Promise<StatusDoc> {
  let last: StatusDoc | undefined;
  try {
    return await until(
      async () => {
        last = await json<StatusDoc>('GET', doc.status);
        return last.state === state ? last : null;
      },
      `${doc.slug} to be ${state}`,
      timeoutMs,
      intervalMs,
    );
  } catch (err) {
    const seen = last ? `; last seen ${last.state}, errors ${JSON.stringify(last.errors.slice(-3))}` : '';
    throw new Error(`${(err as Error).message}${seen}`);
  }
}

export function deleteProcess(doc: StatusDoc): Promise<StatusDoc> {
  return json<StatusDoc>('POST', doc.delete, {});
}

/**
 * What the agent measured was doing, read from a status document, so each row says what it
 * included: an event log (an `events` link), live usage sampling (a non-null `usage`, once a
 * sampling interval has passed).
 */
export function features(doc: StatusDoc): { eventLog: boolean; metrics: boolean } {
  return { eventLog: typeof doc.events === 'string', metrics: doc.usage !== undefined && doc.usage !== null };
}
