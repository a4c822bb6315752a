// The metrics registry and its two exposition formats, read back with a Prometheus text-format parser.
import t from 'tap';
// @ts-expect-error -- parse-prometheus-text-format ships no types
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { negotiateFormat, Registry } from '../../lib/os/prometheus.js';

const parse = parsePrometheusTextFormat as (text: string) => {
  name: string;
  type: string;
  help: string;
  metrics: { labels?: Record<string, string>; value?: string; buckets?: Record<string, string>; count?: string; sum?: string }[];
}[];

t.test('counters, gauges, histograms and collectors render in the text format', async (t) => {
  const r = new Registry();
  const c = r.counter('x_requests_total', 'Requests, by code', ['code']);
  c.inc({ code: '200' });
  c.inc({ code: '200' }, 2);
  c.inc({ code: '500' });
  const g = r.gauge('x_clients', 'Clients', ['endpoint']);
  g.inc({ endpoint: 'a' });
  g.inc({ endpoint: 'a' });
  g.dec({ endpoint: 'a' });
  let n = 41;
  r.gauge('x_queue_length', 'Queue', [], () => ++n);
  const h = r.histogram('x_seconds', 'Durations', [], [0.1, 1]);
  h.observe({}, 0.05);
  h.observe({}, 0.5);
  h.observe({}, 5);
  const hl = r.histogram('x_labelled_seconds', 'Durations by stage', ['stage'], [1]);
  hl.observe({ stage: 'build' }, 2);
  r.collector('x_state', 'States, with "quotes", a \\ and\na newline', 'gauge', ['name'], (emit) => {
    emit({ name: 'a"b\\c\nd' }, 1);
    emit({ name: 'inf' }, Infinity);
  });
  const text = r.render();
  const fams = parse(text);
  const fam = (name: string) => fams.find((f) => f.name === name)!;
  t.same(
    fam('x_requests_total').metrics.map((m) => [m.labels?.code, m.value]),
    [
      ['200', '3'],
      ['500', '1'],
    ],
  );
  t.equal(fam('x_requests_total').type, 'COUNTER');
  t.equal(fam('x_clients').metrics[0].value, '1');
  t.equal(fam('x_queue_length').metrics[0].value, '42', 'read at scrape time');
  const hist = fam('x_seconds');
  t.equal(hist.type, 'HISTOGRAM');
  t.same(hist.metrics[0].buckets, { '0.1': '1', '1': '2', '+Inf': '3' }, 'cumulative buckets');
  t.equal(hist.metrics[0].count, '3');
  t.equal(Number(hist.metrics[0].sum), 5.55);
  // The parser drops the labels of labelled histograms: the lines themselves, then.
  t.match(
    text,
    /^x_labelled_seconds_bucket\{stage="build",le="1"\} 0\nx_labelled_seconds_bucket\{stage="build",le="\+Inf"\} 1\nx_labelled_seconds_sum\{stage="build"\} 2\nx_labelled_seconds_count\{stage="build"\} 1$/m,
  );
  t.equal(fam('x_state').metrics[0].labels!.name, 'a"b\\c\nd', 'label values escaped and read back');
  t.equal(fam('x_state').metrics[1].value, '+Inf');
  t.match(text, /^# HELP x_state States, with "quotes", a \\\\ and\\na newline$/m);
  t.notMatch(text, /# EOF/);
});

t.test('OpenMetrics: counter families without _total, # EOF at the end', async (t) => {
  const r = new Registry();
  r.counter('x_total', 'X').inc();
  const text = r.render('openmetrics');
  t.equal(text, '# HELP x X\n# TYPE x counter\nx_total 1\n# EOF\n');
});

t.test('bad registrations and labels are refused', async (t) => {
  const r = new Registry();
  t.throws(() => r.counter('x', 'no _total'), /must end in _total/);
  t.throws(() => r.gauge('1x', 'bad name'), /invalid metric name/);
  t.throws(() => r.gauge('x', 'bad label', ['a-b']), /invalid label name/);
  t.throws(() => r.histogram('h', 'le is reserved', ['le']), /invalid label name/);
  r.gauge('g', 'g', ['a']);
  t.throws(() => r.gauge('g', 'again'), /already registered/);
  const c = r.counter('c_total', 'c', ['a']);
  t.throws(() => c.inc({ b: '1' }), /has no label "b"/);
  t.throws(() => c.inc({ a: '1' }, -1), /only go up/);
});

t.test('format negotiation follows Accept', async (t) => {
  t.equal(negotiateFormat(undefined), 'text');
  t.equal(negotiateFormat('text/plain;version=0.0.4'), 'text');
  t.equal(negotiateFormat('application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'), 'openmetrics');
  t.equal(negotiateFormat('application/openmetrics-textual'), 'text');
});

t.test('1000 processes worth of collected series all parse', async (t) => {
  const r = new Registry();
  const rows = Array.from({ length: 1000 }, (_v, i) => ({ app: 'fleet', node: `sleep.${i}`, type: 'sleep', slug: `fleet.sleep.${i}` }));
  for (const name of ['a', 'b', 'c', 'd', 'e', 'f'])
    r.collector(`p_${name}`, name, 'gauge', ['app', 'node', 'type', 'slug'], (emit) => rows.forEach((l) => emit(l, 1)));
  r.collector('p_state', 'state', 'gauge', ['app', 'node', 'type', 'slug', 'state'], (emit) => {
    for (const l of rows)
      for (const s of ['pending', 'downloading', 'building', 'running', 'exited', 'restarting', 'deleted'])
        emit({ ...l, state: s }, s === 'running' ? 1 : 0);
  });
  const text = r.render();
  t.equal(
    parse(text).reduce((n, f) => n + f.metrics.length, 0),
    13_000,
    'every series parses',
  );
});
