// A small metrics registry and the two exposition formats Prometheus scrapes: the text format
// 0.0.4 and OpenMetrics 1.0. Written here rather than taken from prom-client because most of
// drover's series are read at scrape time from what the agent already holds (the sampler's
// last figures, the actors' snapshots): a collector emits them in one pass, with no per-process
// metric objects to create, update and forget when a process goes.
//
// Registering a series is one line, where the feature lives:
//   const slow = registry.counter('drover_example_slow_total', 'Slow things, by kind', ['kind']);
//   slow.inc({ kind: 'disk' });
//   registry.gauge('drover_example_waiting', 'Things waiting', [], () => waiting.length);

export type Labels = Record<string, string>;
export type MetricType = 'counter' | 'gauge' | 'histogram';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Seconds: from a fast API answer to a slow build. */
export const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Labels rendered once, for series emitted on every scrape with the same labels (a process's
 * app, node, type, slug): a scrape of a thousand processes then escapes nothing again.
 */
export class LabelSet {
  readonly text: string;
  constructor(readonly labels: Labels) {
    this.text = renderLabels(labels);
  }
}

/** One series of a collector: its labels (a LabelSet, plus `extra` ones), and its value. */
export type Emit = (labels: Labels | LabelSet, value: number, extra?: Labels) => void;

type Line = (name: string, labels: Labels | LabelSet, value: number, extra?: Labels) => void;

interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly labelNames: readonly string[];
  /** Writes the family's samples (without HELP/TYPE lines) through `line`. */
  write(line: Line): void;
}

function labelKey(labelNames: readonly string[], labels: Labels): string {
  let key = '';
  for (const n of labelNames) key += `${labels[n] ?? ''}\u0000`;
  return key;
}

function checkLabels(name: string, labelNames: readonly string[], labels: Labels): void {
  for (const n of Object.keys(labels)) {
    if (!labelNames.includes(n)) throw new Error(`metric ${name} has no label "${n}" (labels: ${labelNames.join(', ') || 'none'})`);
  }
}

/** A value per label set, kept in memory (counters and gauges that are set, not collected). */
class Series {
  protected readonly values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly labelNames: readonly string[],
  ) {}

  protected entry(labels: Labels) {
    const key = labelKey(this.labelNames, labels);
    let e = this.values.get(key);
    if (!e) {
      checkLabels(this.name, this.labelNames, labels);
      e = { labels: { ...labels }, value: 0 };
      this.values.set(key, e);
    }
    return e;
  }

  /** The current value of one label set (0 when never touched). */
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(this.labelNames, labels))?.value ?? 0;
  }

  /** Forgets one label set (e.g. a WebSocket endpoint that is gone). */
  remove(labels: Labels): void {
    this.values.delete(labelKey(this.labelNames, labels));
  }
}

export class Counter extends Series {
  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new Error(`counter ${this.name} can only go up (got ${by})`);
    this.entry(labels).value += by;
  }
  /** @internal */
  write(line: Line): void {
    for (const { labels, value } of this.values.values()) line(this.name, labels, value);
  }
}

export class Gauge extends Series {
  set(labels: Labels, value: number): void {
    this.entry(labels).value = value;
  }
  inc(labels: Labels = {}, by = 1): void {
    this.entry(labels).value += by;
  }
  dec(labels: Labels = {}, by = 1): void {
    this.entry(labels).value -= by;
  }
  /** @internal */
  write(line: Line): void {
    for (const { labels, value } of this.values.values()) line(this.name, labels, value);
  }
}

export class Histogram {
  private readonly values = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly labelNames: readonly string[],
    readonly buckets: readonly number[],
  ) {}

  observe(labels: Labels, value: number): void {
    const key = labelKey(this.labelNames, labels);
    let e = this.values.get(key);
    if (!e) {
      checkLabels(this.name, this.labelNames, labels);
      e = { labels: { ...labels }, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.values.set(key, e);
    }
    // Cumulative buckets are made at render time; here each observation counts once.
    const i = this.buckets.findIndex((b) => value <= b);
    if (i >= 0) e.counts[i]++;
    e.sum += value;
    e.count++;
  }

  /** Observations and their sum for one label set. */
  get(labels: Labels = {}): { count: number; sum: number } {
    const e = this.values.get(labelKey(this.labelNames, labels));
    return { count: e?.count ?? 0, sum: e?.sum ?? 0 };
  }

  /** @internal */
  write(line: Line): void {
    for (const { labels, counts, sum, count } of this.values.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cumulative += counts[i];
        line(`${this.name}_bucket`, { ...labels, le: formatNumber(this.buckets[i]) }, cumulative);
      }
      line(`${this.name}_bucket`, { ...labels, le: '+Inf' }, count);
      line(`${this.name}_sum`, labels, sum);
      line(`${this.name}_count`, labels, count);
    }
  }
}

export const TEXT_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

/** OpenMetrics when the scraper's Accept names it (as Prometheus does when it prefers it), else the text format. */
export function negotiateFormat(accept: string | null | undefined): 'openmetrics' | 'text' {
  return /(^|,)\s*application\/openmetrics-text\s*(;|,|$)/i.test(accept ?? '') ? 'openmetrics' : 'text';
}

export function formatNumber(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

const NEEDS_ESCAPE = /[\\"\n]/;
const escapeLabel = (v: string) => (NEEDS_ESCAPE.test(v) ? v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"') : v);

/** `a="1",b="2"`, escaped. */
function renderLabels(labels: Labels): string {
  let text = '';
  for (const k in labels) text += `${text ? ',' : ''}${k}="${escapeLabel(labels[k])}"`;
  return text;
}
const escapeHelp = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

export class Registry {
  private readonly families = new Map<string, Family>();

  private add<T extends Family>(family: T): T {
    if (!METRIC_NAME.test(family.name)) throw new Error(`invalid metric name "${family.name}"`);
    for (const l of family.labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__') || (family.type === 'histogram' && l === 'le'))
        throw new Error(`metric ${family.name}: invalid label name "${l}"`);
    }
    if (family.type === 'counter' && !family.name.endsWith('_total'))
      throw new Error(`counter ${family.name} must end in _total (both formats name its samples so)`);
    if (this.families.has(family.name)) throw new Error(`metric ${family.name} is already registered`);
    this.families.set(family.name, family);
    return family;
  }

  /** A counter the feature increments. */
  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    const c = new Counter(name, labelNames);
    this.add({ name, help, type: 'counter', labelNames, write: (line) => c.write(line) });
    return c;
  }

  /**
   * A gauge: either set by the feature (no `read`), or read at scrape time from `read`, which
   * returns the value of the one unlabelled series.
   */
  gauge(name: string, help: string, labelNames: readonly string[] = [], read?: () => number): Gauge {
    const g = new Gauge(name, labelNames);
    this.add({
      name,
      help,
      type: 'gauge',
      labelNames,
      write: read ? (line) => line(name, {}, read()) : (line) => g.write(line),
    });
    return g;
  }

  histogram(name: string, help: string, labelNames: readonly string[] = [], buckets: readonly number[] = DEFAULT_BUCKETS): Histogram {
    const sorted = [...buckets].sort((a, b) => a - b);
    const h = new Histogram(name, labelNames, sorted);
    this.add({ name, help, type: 'histogram', labelNames, write: (line) => h.write(line) });
    return h;
  }

  /**
   * A family computed at scrape time: `collect` calls `emit(labels, value)` once per series.
   * This is how per-process series are made: one pass over what the agent holds, nothing kept.
   */
  collector(name: string, help: string, type: 'counter' | 'gauge', labelNames: readonly string[], collect: (emit: Emit) => void): void {
    this.add({
      name,
      help,
      type,
      labelNames,
      write: (line) => collect((labels, value, extra) => line(name, labels, value, extra)),
    });
  }

  /** Names of the registered families, in registration order. */
  names(): string[] {
    return [...this.families.keys()];
  }

  /** The exposition: Prometheus text format 0.0.4, or OpenMetrics 1.0 (which ends with `# EOF`). */
  render(format: 'text' | 'openmetrics' = 'text'): string {
    const om = format === 'openmetrics';
    let out = '';
    for (const f of this.families.values()) {
      // OpenMetrics names a counter family without its _total suffix; its samples keep it.
      const family = om && f.type === 'counter' ? f.name.slice(0, -'_total'.length) : f.name;
      out += `# HELP ${family} ${escapeHelp(f.help)}\n# TYPE ${family} ${f.type}\n`;
      f.write((name, labels, value, extra) => {
        let l = labels instanceof LabelSet ? labels.text : renderLabels(labels);
        if (extra) {
          const more = renderLabels(extra);
          if (more) l = l ? `${l},${more}` : more;
        }
        out += l ? `${name}{${l}} ${formatNumber(value)}\n` : `${name} ${formatNumber(value)}\n`;
      });
    }
    if (om) out += '# EOF\n';
    return out;
  }
}
