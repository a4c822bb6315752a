import t from 'tap';
import { checkRunPath } from '../../lib/agent/run-files.js';
import { newRunId, RUN_ID } from '../../lib/agent/runs.js';
import { runEvent } from '../../lib/api/runs.js';
import { validateStart } from '../../lib/http/runs.js';
import { ApiError } from '../../lib/http/errors.js';

t.test('run ids are 128 random bits', async (t) => {
  const ids = new Set(Array.from({ length: 1000 }, newRunId));
  t.equal(ids.size, 1000);
  for (const id of ids) t.match(id, RUN_ID);
});

t.test('paths into a run: relative, no "..", no NUL', async (t) => {
  t.same(checkRunPath('out/a.txt'), ['out', 'a.txt']);
  t.same(checkRunPath('./out//a.txt'), ['out', 'a.txt']);
  t.same(checkRunPath('.'), []);
  for (const bad of ['/etc/passwd', '../x', 'a/../../x', 'a/..', 'a\0b']) {
    let status = 0;
    try {
      checkRunPath(bad);
    } catch (err) {
      status = (err as { status: number }).status;
    }
    t.equal(status, 400, JSON.stringify(bad));
  }
});

t.test('log lines become yinyo events; the actor’s own bookkeeping is left out', async (t) => {
  const id = 'f'.repeat(32);
  const time = '2025-01-01T00:00:00.000Z';
  t.same(runEvent(JSON.stringify({ id: 3, time, type: 'output', stream: 'build', text: 'npm ci' }), id), {
    id: '3',
    run_id: id,
    time,
    type: 'log',
    data: { stage: 'build', stream: 'stdout', text: 'npm ci' },
  });
  t.same(runEvent(JSON.stringify({ id: 9, time, type: 'output', stream: 'stderr', text: 'oops' }), id)?.data, {
    stage: 'execute',
    stream: 'stderr',
    text: 'oops',
  });
  t.same(runEvent(JSON.stringify({ id: 4, time, type: 'start', run_id: id, data: { stage: 'execute' } }), id), {
    id: '4',
    run_id: id,
    time,
    type: 'start',
    data: { stage: 'execute' },
  });
  t.equal(runEvent(JSON.stringify({ id: 5, time, type: 'state', from: 'a', to: 'b' }), id), null);
  t.equal(runEvent('not json', id), null);
});

t.test('the start document: yinyo and drover forms, each field checked', async (t) => {
  t.same(validateStart({ env: [{ name: 'A', value: '1' }], output: 'data.sqlite', callback: { url: 'http://x/cb' }, max_run_time: 60 }), {
    env: { A: '1' },
    output: ['data.sqlite'],
    callback: { url: 'http://x/cb' },
    maxRunTime: 60,
  });
  t.same(validateStart({ env: { A: '1' }, output: ['a', 'b/c'], memory: 1 << 30, process_type: 'scrape' }), {
    env: { A: '1' },
    output: ['a', 'b/c'],
    memory: 1 << 30,
    processType: 'scrape',
  });
  t.same(validateStart({}), { env: {}, output: [] });
  const field = (body: Record<string, unknown>) => {
    try {
      validateStart(body);
    } catch (err) {
      return (err as ApiError).field;
    }
    return null;
  };
  t.equal(field({ max_run_time: 86_401 }), 'max_run_time');
  t.equal(field({ max_run_time: -1 }), 'max_run_time');
  t.equal(field({ memory: 10 }), 'memory');
  t.equal(field({ output: '/abs' }), 'output');
  t.equal(field({ output: 'a/../../b' }), 'output');
  t.equal(field({ callback: { url: 'ftp://x' } }), 'callback');
  t.equal(field({ env: [{ value: 'x' }] }), 'env');
  t.equal(field({ command: 'x', process_type: 'run' }), 'command');
  t.equal(field({ what: 1 }), 'what');
});
