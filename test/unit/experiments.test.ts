import t from 'tap';
import { ExperimentStdout, experimentErrorNote, experimentOutcome } from '../../lib/agent/callbacks.js';
import { parseFormBool, passwordMatches } from '../../lib/http/experiments.js';

t.test("isAdmin as the runner's clients send it", async (t) => {
  for (const v of ['true', 'True', 'TRUE', '1', ' True ']) t.equal(parseFormBool(v), true, v);
  for (const v of ['false', 'False', '0']) t.equal(parseFormBool(v), false, v);
  for (const v of ['', 'yes', 'truee', '2']) t.equal(parseFormBool(v), null, JSON.stringify(v));
});

t.test('the password: equal only to itself; a missing one never matches', async (t) => {
  t.ok(passwordMatches('runner-password-0123456789', 'runner-password-0123456789'));
  t.notOk(passwordMatches('runner-password-0123456789', 'runner-password-012345678'));
  t.notOk(passwordMatches('runner-password-0123456789', ''));
  t.notOk(passwordMatches('runner-password-0123456789', null));
});

t.test("outcome: the runner's files rule (success file, then *plot_data.csv); drover adds a clean exit", async (t) => {
  // A file named success wins whatever the exit, even after a cancel (the runner ignores the exit code).
  t.equal(experimentOutcome(['success'], 3, false), 'success');
  t.equal(experimentOutcome(['deep/dir/success', 'x.csv'], null, true), 'success');
  t.equal(experimentOutcome(['not_success'], 3, false), 'failed', 'the name exactly');
  // Some plots: partial.
  t.equal(experimentOutcome(['out/ap_gnuplot_data.csv'], 1, false), 'partial');
  t.equal(experimentOutcome(['plot_data.csv'], null, true), 'partial');
  t.equal(experimentOutcome(['plot_data.csv.bak', 'results.txt'], 1, false), 'failed', 'other files are no results');
  // drover's addition: exit 0, not cancelled.
  t.equal(experimentOutcome([], 0, false), 'success');
  t.equal(experimentOutcome([], 0, true), 'failed');
  t.equal(experimentOutcome([], null, false), 'failed');
});

const line = (id: number, e: Record<string, unknown>) => JSON.stringify({ id, time: '2026-01-01T00:00:00.000Z', ...e });

t.test("stdout.txt: the execute stage's stdout and stderr, of its last attempt, capped at its end", async (t) => {
  const s = new ExperimentStdout(1000);
  s.add(line(1, { type: 'first', run_id: 'r', data: {} }));
  s.add(line(2, { type: 'output', stream: 'build', text: 'compiling' }));
  s.add(line(3, { type: 'start', run_id: 'r', data: { stage: 'execute' } }));
  s.add(line(4, { type: 'output', stream: 'stdout', text: 'first attempt' }));
  s.add(line(5, { type: 'interrupted', run_id: 'r', data: {} }));
  s.add(line(6, { type: 'output', stream: 'build', text: 'compiling again' }));
  s.add(line(7, { type: 'start', run_id: 'r', data: { stage: 'execute' } }));
  s.add(line(8, { type: 'output', stream: 'stdout', text: 'out' }));
  s.add(line(9, { type: 'output', stream: 'stderr', text: 'err' }));
  s.add(line(10, { type: 'callback_attempt', run_id: 'r', data: { status: 200 } }));
  s.add('not json');
  t.equal(s.text(), 'out\nerr\n');

  const capped = new ExperimentStdout(10);
  for (let i = 0; i < 5; i++) capped.add(line(i, { type: 'output', stream: 'stdout', text: `line${i}` }));
  t.equal(capped.text(), '[drover: the first 24 bytes of output were left out]\nline4\n', 'the end is kept');

  const many = new ExperimentStdout(6);
  for (let i = 0; i < 5000; i++) many.add(line(i, { type: 'output', stream: 'stdout', text: String(i % 10) }));
  t.equal(many.text(), `[drover: the first ${4997 * 2} bytes of output were left out]\n7\n8\n9\n`);
});

t.test("errors.txt: the runner's time-limit note, or the cancel", async (t) => {
  const usage = { utime: null, stime: null, max_rss: null, network_in: 0, network_out: 0 };
  t.equal(experimentErrorNote({ exit_code: null, usage, timed_out: true }, false), 'Experiment terminated due to exceeding time limit');
  t.equal(experimentErrorNote({ exit_code: 5, usage }, true), 'Experiment terminated: cancelled (cancelTask)');
  t.equal(experimentErrorNote({ exit_code: 1, usage }, false), null);
  t.equal(experimentErrorNote(undefined, false), null);
});
