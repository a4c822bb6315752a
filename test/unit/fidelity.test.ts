// Pure pieces behind issue 12: the Prefer header, request ids, the min-uptime wording, the helper's pid line.
import t from 'tap';
import { prefersRepresentation } from '../../lib/http/routes.js';
import { requestIdOf } from '../../lib/http/request-id.js';
import { exitError, seconds } from '../../lib/process/wording.js';
import { parseHelperLine, parsePidLine } from '../../lib/os/wait-helper.js';

t.test('Prefer: return=representation, as RFC 7240 writes it', async (t) => {
  t.ok(prefersRepresentation('return=representation'));
  t.ok(prefersRepresentation('respond-async, return=representation'));
  t.ok(prefersRepresentation('Return="representation"; foo=bar'));
  t.ok(prefersRepresentation(' return = representation '));
  t.notOk(prefersRepresentation(null));
  t.notOk(prefersRepresentation(''));
  t.notOk(prefersRepresentation('return=minimal'));
  t.notOk(prefersRepresentation('handling=lenient; return=representation'), 'a parameter of another preference');
});

t.test('request ids: the caller’s, bounded, or a new UUID', async (t) => {
  t.equal(requestIdOf('abc'), 'abc');
  t.equal(requestIdOf(['first', 'second']), 'first');
  t.equal(requestIdOf('x'.repeat(500)).length, 200);
  t.match(requestIdOf(undefined), /^[0-9a-f-]{36}$/);
  t.match(requestIdOf('   '), /^[0-9a-f-]{36}$/);
  t.not(requestIdOf(undefined), requestIdOf(undefined));
});

t.test('a clean exit is an error only when it came sooner than the minimum uptime', async (t) => {
  const exit = (code: number | null, ms: number, signal: string | null = null) => ({ code, signal, startedAt: 1000, endedAt: 1000 + ms });
  t.equal(exitError(exit(0, 40), 1000), 'process exited after 0.04 s (code 0)');
  t.equal(exitError(exit(0, 4123), 10_000), 'process exited after 4.1 s (code 0)');
  t.equal(exitError(exit(0, 1000), 1000), null, 'exactly the minimum is enough');
  t.equal(exitError(exit(0, 40)), null, 'off by default');
  t.equal(exitError(exit(3, 40), 1000), 'process exited with code 3', 'failures keep their wording');
  t.equal(exitError(exit(null, 40, 'SIGKILL'), 1000), 'process was killed by SIGKILL');
  t.equal(seconds(0), '0 s');
  t.equal(seconds(1234), '1.2 s');
});

t.test('the exit helper reports the command’s pid, then how it ended', async (t) => {
  t.equal(parsePidLine('pid 4242'), 4242);
  t.equal(parsePidLine('pid -1'), null);
  t.equal(parsePidLine('exit 0 1 2 3'), null);
  t.equal(parsePidLine('pid 12 extra'), null);
  t.match(parseHelperLine('exit 256 1000000 0 2048'), { status: 256, utime: 1, stime: 0, maxrss: 2048 * 1024 });
});
