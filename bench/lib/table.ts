import { meetsTarget, type Row, type Unit } from './row.js';

const DIGITS: Record<Unit, number> = { s: 3, ms: 2, MB: 1, '%': 2, 'req/s': 0 };

export function formatValue(v: number, unit: Unit): string {
  return `${v.toFixed(DIGITS[unit])}${unit === '%' ? '%' : ` ${unit}`}`;
}

function peerText(row: Row): string {
  return row.peers
    .map((p) => {
      if (!p.figure) return `${p.name}: ${p.note ?? 'not measured'}`;
      const ratio = p.figure.median > 0 ? ` (drover ${(row.figure.median / p.figure.median).toFixed(2)}x)` : '';
      return `${p.name} ${formatValue(p.figure.median, row.unit)}${ratio}`;
    })
    .join('; ');
}

/** A plain-text table, one line per row. */
export function formatTable(rows: Row[]): string {
  const header = ['scenario', 'median', 'min', 'max', 'target', 'met', 'peers (median)'];
  const lines = rows.map((r) => {
    const met = meetsTarget(r);
    return [
      r.label,
      formatValue(r.figure.median, r.unit),
      formatValue(r.figure.min, r.unit),
      formatValue(r.figure.max, r.unit),
      r.target?.text ?? '-',
      met === null ? '-' : met ? 'yes' : 'NO',
      peerText(r) || '-',
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (i === header.length - 1 ? 0 : l[i].length))));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  const notes = rows.filter((r) => r.notes.length > 0).map((r) => `  ${r.label}: ${r.notes.join('; ')}`);
  return [fmt(header), ...lines.map(fmt), ...(notes.length ? ['', 'notes:', ...notes] : [])].join('\n');
}
