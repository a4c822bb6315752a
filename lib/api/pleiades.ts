// The documents of the Pleiades worker API (/api/v0.5/), with the field names and types its
// public clients (pypleiades, pleiades-rs) read: every reply has `code` (0 ok) and `status`,
// ids are strings.
import type { JobRecord, LambdaRecord, WorkerRecord } from '../store/pleiades.js';

export const API_PREFIX = '/api/v0.5';

/** Pleiades reply codes: 0 ok, 1 a generic error, 601 no such blob, 1299 no job for a contract. */
export const CODE = { ok: 0, error: 1, noBlob: 601, noJob: 1299 } as const;

export function ok<T extends object>(fields: T, message = 'ok') {
  return { code: CODE.ok, status: 'ok', message, ...fields };
}

/** An error reply; `field` names what was wrong, where one thing was. */
export function pleiadesError(message: string, field?: string, code: number = CODE.error) {
  return { code, status: 'error', message, ...(field ? { field } : {}) };
}

export function workerDocument(w: WorkerRecord) {
  return ok({ id: w.id, runtime: w.runtime, created_at: w.createdAt });
}

export function lambdaDocument(l: LambdaRecord) {
  return ok({ id: l.id, codex: l.codex, runtime: l.runtime, created_at: l.createdAt });
}

export function jobDocument(j: JobRecord, lambda: LambdaRecord | undefined) {
  return ok({
    id: j.id,
    state: j.state,
    lambda: { id: j.lambda, runtime: lambda?.runtime ?? '', codex: lambda?.codex ?? '' },
    input: { id: j.input },
    ...(j.output ? { output: { id: j.output } } : {}),
    tags: j.tags,
    attempts: j.attempts,
    ...(j.worker ? { worker: j.worker } : {}),
    ...(j.leaseUntil ? { lease_until: new Date(j.leaseUntil).toISOString() } : {}),
    ...(j.message ? { detail: j.message } : {}),
    created_at: j.createdAt,
    updated_at: j.updatedAt,
  });
}

export function dataDocument(info: { id: string; size: number; usedAt: Date }) {
  return ok({ id: info.id, checksum: info.id, size: info.size, used_at: info.usedAt.toISOString() });
}
