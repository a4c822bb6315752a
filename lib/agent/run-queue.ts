// The run queue's decisions, pure (no timers, no I/O): which queued run gets the next free slot.
// Rules: admins first and only they may use the reserved slots; among the rest a higher numeric
// priority goes first, and within one priority users are served round-robin (the user served
// longest ago first), FIFO within a user — one user's 500 submissions do not starve another's one.
// A run queued again after an agent restart interrupted it goes first within its priority.

export type PriorityClass = 'admin' | 'normal' | 'low';
export type Priority = PriorityClass | number;

export interface QueueEntry {
  id: string;
  user: string;
  priority: Priority;
  /** Submission order (increasing). */
  seq: number;
  /** Queued again after an agent restart interrupted it: it already had its turn, so it goes first among its priority. */
  resumed?: boolean;
}

export interface QueueLimits {
  maxConcurrent: number;
  /** Slots only admins may use. */
  adminReserved: number;
}

/** The numeric rank of a priority: admin above every number, low below normal (0). */
export function rank(p: Priority): number {
  if (p === 'admin') return Number.POSITIVE_INFINITY;
  if (p === 'normal') return 0;
  if (p === 'low') return -1_000_000;
  return p;
}

/** Parses a priority from a request: a class name or a finite number; null when it is neither. */
export function parsePriority(v: unknown): Priority | null {
  if (v === 'admin' || v === 'normal' || v === 'low') return v;
  if (typeof v === 'number' && Number.isFinite(v) && Math.abs(v) < 1_000_000) return v;
  return null;
}

/**
 * The queue in the order it will be served, given when each user was last served (a counter;
 * absent = never). Pure: simulates the round-robin without capacity (capacity only gates *when*).
 */
export function serveOrder(entries: readonly QueueEntry[], lastServed: ReadonlyMap<string, number>): QueueEntry[] {
  const served = new Map(lastServed);
  let clock = Math.max(0, ...served.values());
  const left = [...entries].sort((a, b) => a.seq - b.seq);
  const out: QueueEntry[] = [];
  while (left.length) {
    const i = pickIndex(left, served);
    const [e] = left.splice(i, 1);
    out.push(e);
    served.set(e.user, ++clock);
  }
  return out;
}

function pickIndex(left: readonly QueueEntry[], served: ReadonlyMap<string, number>): number {
  let best = -1;
  for (let i = 0; i < left.length; i++) {
    if (best < 0) {
      best = i;
      continue;
    }
    const a = left[i];
    const b = left[best];
    const ra = rank(a.priority);
    const rb = rank(b.priority);
    if (ra !== rb) {
      if (ra > rb) best = i;
      continue;
    }
    if (Boolean(a.resumed) !== Boolean(b.resumed)) {
      if (a.resumed) best = i;
      continue;
    }
    // Admins are served FIFO among themselves; others round-robin by user.
    if (a.priority !== 'admin' && !a.resumed) {
      const sa = served.get(a.user) ?? -1;
      const sb = served.get(b.user) ?? -1;
      if (sa !== sb) {
        if (sa < sb) best = i;
        continue;
      }
    }
    if (a.seq < b.seq) best = i;
  }
  return best;
}

/** How many slots are free for an admin and for anyone else, given the runs holding slots. */
export function freeSlots(running: number, limits: QueueLimits): { admin: number; other: number } {
  const max = Math.max(1, limits.maxConcurrent);
  // At least one slot stays open to everyone.
  const reserved = Math.min(Math.max(0, limits.adminReserved), max - 1);
  return { admin: Math.max(0, max - running), other: Math.max(0, max - reserved - running) };
}

/** The next entry to start now, or null when none may (no slot, or only reserved ones and no admin waiting). */
export function nextToStart(
  entries: readonly QueueEntry[],
  running: number,
  limits: QueueLimits,
  lastServed: ReadonlyMap<string, number>,
): QueueEntry | null {
  const free = freeSlots(running, limits);
  if (free.admin <= 0) return null;
  const order = serveOrder(entries, lastServed);
  const first = order[0];
  if (!first) return null;
  if (first.priority === 'admin') return first;
  return free.other > 0 ? first : null;
}

/** Per-user counts of queued entries, for GET /queue. */
export function countsByUser(entries: readonly QueueEntry[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const e of entries) counts[e.user] = (counts[e.user] ?? 0) + 1;
  return counts;
}
