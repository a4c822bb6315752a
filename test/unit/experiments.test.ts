import t from 'tap';
import { experimentOutcome } from '../../lib/agent/callbacks.js';
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

t.test('outcome: success on exit 0, partial with results, else failed; a cancel never succeeds', async (t) => {
  t.equal(experimentOutcome(0, false, false), 'success');
  t.equal(experimentOutcome(0, false, true), 'success');
  t.equal(experimentOutcome(3, false, true), 'partial');
  t.equal(experimentOutcome(null, false, false), 'failed');
  t.equal(experimentOutcome(0, true, false), 'failed');
  t.equal(experimentOutcome(5, true, true), 'partial');
});
