// What the Pleiades worker API (/api/v0.5/) keeps on disk: workers, lambdas and jobs, in one
// journal (DIR/pleiades.json + DIR/pleiades.journal), so queued and leased jobs survive an
// agent restart.
import { Journal } from './journal.js';

/** Job states: Pleiades' five, plus Failed (a worker reported a failure). */
export const JOB_STATES = ['PreAssigned', 'Enqueued', 'Running', 'Finished', 'Failed', 'Cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const TERMINAL_STATES: readonly JobState[] = ['Finished', 'Failed', 'Cancelled'];

export interface WorkerRecord {
  kind: 'worker';
  id: string;
  runtime: string[];
  createdAt: string;
}

export interface LambdaRecord {
  kind: 'lambda';
  id: string;
  /** Data id of the code: a source archive with a Procfile. */
  codex: string;
  runtime: string;
  createdAt: string;
}

export interface JobRecord {
  kind: 'job';
  id: string;
  lambda: string;
  input: string;
  tags: string[];
  state: JobState;
  /** Creation order: assignment is FIFO by it. */
  seq: number;
  createdAt: string;
  updatedAt: string;
  output?: string;
  /** The worker holding it (Running). */
  worker?: string;
  /** When its lease runs out (epoch ms), while Running. */
  leaseUntil?: number;
  /** How many times it was handed to a worker. */
  attempts: number;
  /** The last failure or lost lease, in words. */
  message?: string;
}

export type PleiadesRecord = WorkerRecord | LambdaRecord | JobRecord;

export const keyOf = (r: Pick<PleiadesRecord, 'kind' | 'id'>) => `${r.kind}:${r.id}`;

const isStr = (v: unknown): v is string => typeof v === 'string';
const isStrs = (v: unknown): v is string[] => Array.isArray(v) && v.every(isStr);

export function isPleiadesRecord(v: unknown): v is PleiadesRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  if (!isStr(r.id) || !isStr(r.createdAt)) return false;
  if (r.kind === 'worker') return isStrs(r.runtime);
  if (r.kind === 'lambda') return isStr(r.codex) && isStr(r.runtime);
  if (r.kind !== 'job') return false;
  return (
    isStr(r.lambda) &&
    isStr(r.input) &&
    isStrs(r.tags) &&
    JOB_STATES.includes(r.state as JobState) &&
    Number.isInteger(r.seq) &&
    Number.isInteger(r.attempts) &&
    isStr(r.updatedAt) &&
    (r.output === undefined || isStr(r.output)) &&
    (r.worker === undefined || isStr(r.worker)) &&
    (r.leaseUntil === undefined || typeof r.leaseUntil === 'number') &&
    (r.message === undefined || isStr(r.message))
  );
}

export function openPleiadesJournal(dir: string, warn: (message: string) => void): Promise<Journal<PleiadesRecord>> {
  return Journal.open<PleiadesRecord>({ dir, name: 'pleiades', keyOf, isRecord: isPleiadesRecord, warn });
}
