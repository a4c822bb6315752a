// Small formatting helpers for the dashboard. "—" wherever the agent reports nothing.

export const NONE = '—';

export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return NONE;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function bytes(n) {
  if (!Number.isFinite(n) || n < 0) return NONE;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function percent(n) {
  return Number.isFinite(n) ? `${n >= 10 ? Math.round(n) : n.toFixed(1)}%` : NONE;
}

/**
 * CPU % and resident memory from a status document's `usage`, whatever its exact field names;
 * null when the agent does not report usage.
 */
export function usageOf(doc) {
  const u = doc?.usage;
  if (!u || typeof u !== 'object') return null;
  const num = (...keys) => {
    for (const k of keys) if (typeof u[k] === 'number') return u[k];
    return undefined;
  };
  return {
    cpu: num('cpu_percent', 'cpu', 'cpu_pct', 'pcpu'),
    memory: num('rss_bytes', 'rss', 'memory_bytes', 'memory', 'mem'),
  };
}

export function text(v) {
  return v === null || v === undefined || v === '' ? NONE : String(v);
}

/** "0.25 s", "12 s", "3 min": a duration given in seconds, short. */
export function seconds(s) {
  if (!Number.isFinite(s) || s < 0) return NONE;
  if (s < 10) return `${Number(s.toPrecision(2))} s`;
  if (s < 120) return `${Math.round(s)} s`;
  return duration(s * 1000);
}

/**
 * One word for what a process is doing, the same as `drover ps` says: a process stopped on
 * request is `stopped` (the machine's `exited` with `stopped: true`), anything else its state.
 */
export function shownState(p) {
  return p.state === 'exited' && p.doc?.stopped === true ? 'stopped' : p.state;
}
