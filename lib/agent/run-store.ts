// What is kept of runs across agent restarts, in one journal (STATE_DIR/runs/runs.json +
// runs.journal, see store/journal.ts): one record per run until it is finalised, plus the
// queue's fairness clock. A queued run comes back queued in its place; one that was building or
// executing comes back interrupted (and queued again when it asked for retry_on_restart).
import { Journal } from '../store/journal.js';
import type { CallbackSpec, StageExit, StartOptions } from './runs.js';

export type RecordPhase = 'created' | 'uploaded' | 'queued' | 'building' | 'executing' | 'finished';

export interface RunRecord {
  kind: 'run';
  id: string;
  name?: string;
  createdAt: string;
  phase: RecordPhase;
  options?: StartOptions;
  archive?: { sha256: string; bytes: number };
  /** The app's root, relative to the run's directory. */
  appRoot?: string;
  hasCache?: boolean;
  queueSeq?: number;
  startedAt?: string;
  finishedAt?: string;
  exitData?: { build?: StageExit; execute?: StageExit };
  cancelled?: boolean;
  lastEventId?: number;
}

/** When each user was last served (the round-robin's memory), so the order survives a restart. */
export interface ServedRecord {
  kind: 'served';
  id: 'served';
  clock: number;
  users: Record<string, number>;
}

export type RunStoreRecord = RunRecord | ServedRecord;

const PHASES: readonly string[] = ['created', 'uploaded', 'queued', 'building', 'executing', 'finished'];

function isCallback(v: unknown): v is CallbackSpec {
  return typeof v === 'object' && v !== null && typeof (v as { url?: unknown }).url === 'string';
}

function isRecord(v: unknown): v is RunStoreRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  if (r.kind === 'served') return r.id === 'served' && typeof r.clock === 'number' && typeof r.users === 'object' && r.users !== null;
  if (r.kind !== 'run' || typeof r.id !== 'string' || !/^[0-9a-f]{32}$/.test(r.id)) return false;
  if (typeof r.createdAt !== 'string' || typeof r.phase !== 'string' || !PHASES.includes(r.phase)) return false;
  const o = r.options as Record<string, unknown> | undefined;
  if (o !== undefined && (typeof o !== 'object' || o === null || typeof o.env !== 'object' || !Array.isArray(o.output))) return false;
  if (o?.callback !== undefined && !isCallback(o.callback)) return false;
  return r.appRoot === undefined || (typeof r.appRoot === 'string' && !r.appRoot.split('/').includes('..'));
}

export function openRunStore(dir: string, warn: (line: string) => void): Promise<Journal<RunStoreRecord>> {
  return Journal.open<RunStoreRecord>({ dir, name: 'runs', keyOf: (r) => r.id, isRecord, warn });
}
