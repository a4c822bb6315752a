// Terminal output helpers: colors only on a TTY (and never with NO_COLOR), aligned tables,
// short durations and sizes.

export interface Out {
  write(text: string): unknown;
  isTTY?: boolean;
}

export function colorsEnabled(stream: Out, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined) return env.FORCE_COLOR !== '0' && env.FORCE_COLOR !== 'false';
  return stream.isTTY === true && env.TERM !== 'dumb';
}

const CODES = { red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36, gray: 90, bold: 1, dim: 2 } as const;
export type Color = keyof typeof CODES;

export type Painter = (color: Color, text: string) => string;

export function painter(enabled: boolean): Painter {
  return enabled ? (color, text) => `\x1b[${CODES[color]}m${text}\x1b[0m` : (_color, text) => text;
}

/** Colors for a process's state, so a failing process stands out in `ps`. */
export function stateColor(state: string): Color {
  if (state === 'running') return 'green';
  if (state === 'exited' || state === 'restarting' || state === 'failed') return 'red';
  if (state === 'deleted' || state === 'stopped') return 'gray';
  return 'yellow';
}

/**
 * One word for what a process is doing, everywhere (ps, stop, status, the dashboard): a process
 * stopped on request is `stopped` (the agent's `exited` with `stopped: true`).
 */
export function shownState(doc: { state?: unknown; stopped?: unknown }): string {
  return doc.stopped === true && (doc.state === 'exited' || doc.state === undefined) ? 'stopped' : String(doc.state);
}

/** Columns padded to the widest cell; ANSI codes don't count toward the width. */
export function table(header: string[], rows: string[][]): string {
  const visible = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '').length;
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => visible(r[i] ?? ''))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat(widths[i] - visible(c))))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

export function bytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}
