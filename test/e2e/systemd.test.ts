// `drover serve` under systemd's Type=notify, with a fake notify socket: READY=1 once restore
// has finished and the API listens, WATCHDOG=1 every WATCHDOG_USEC/2, STOPPING=1 on SIGTERM.
import { existsSync } from 'node:fs';
import t from 'tap';
import { SystemdNotifier } from '../../lib/os/sd-notify.js';
import { spawnAgent } from '../helpers/agent-process.js';
import { fakeNotifySocket } from '../helpers/notify-socket.js';
import { waitFor } from '../helpers/wait.js';

t.test('drover serve sends READY=1 after restore, WATCHDOG=1 while running and STOPPING=1 on SIGTERM', async (t) => {
  const sock = await fakeNotifySocket();
  t.teardown(() => sock.close());
  const agent = await spawnAgent([], {
    env: { ...process.env, NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: '400000', WATCHDOG_PID: '' },
  });
  const ready = await waitFor(() => sock.messages.find((m) => m.split('\n').includes('READY=1')), 'READY=1', 30_000);
  t.match(ready, /^READY=1\nSTATUS=listening on http:\/\/127\.0\.0\.1:\d+, 0 process\(es\)$/, 'READY=1 with a status line');
  // Ready only once the API answers: the agent said where it listens before.
  t.match(agent.stderr(), /listening on/);
  const res = await fetch(`${agent.url}/readyz`);
  t.equal(res.status, 200, 'ready as systemd is told so');
  await waitFor(() => sock.messages.filter((m) => m === 'WATCHDOG=1').length >= 2, 'two watchdog pings', 30_000);
  agent.proc.kill('SIGTERM');
  const { code } = await agent.exit;
  t.equal(code, 0);
  const stopping = sock.messages.findIndex((m) => m.startsWith('STOPPING=1'));
  t.ok(stopping > sock.messages.findIndex((m) => m.startsWith('READY=1')), 'STOPPING=1 after READY=1');
  t.notOk(sock.messages.slice(stopping + 1).includes('WATCHDOG=1'), 'no watchdog ping after STOPPING=1');
});

t.test('the helper reaches an abstract notify socket; without NOTIFY_SOCKET nothing is sent', async (t) => {
  const sock = await fakeNotifySocket({ abstract: true });
  t.teardown(() => sock.close());
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: '1000000', WATCHDOG_PID: '1', PATH: process.env.PATH };
  const n = SystemdNotifier.fromEnv({ env });
  t.ok(n, 'a notifier');
  t.same(Object.keys(env), ['PATH'], 'NOTIFY_SOCKET and the watchdog variables are taken out of the environment children inherit');
  t.equal(n!.watchdogIntervalMs, 0, 'WATCHDOG_PID names another process: no pings');
  n!.status('multi\nline \\ status');
  await waitFor(() => sock.messages.length === 1, 'the status message');
  t.equal(sock.messages[0], 'STATUS=multi\nline \\ status', 'newlines and backslashes arrive as sent');
  await n!.close();
  t.equal(SystemdNotifier.fromEnv({ env: { PATH: process.env.PATH } }), null);
});

t.test(
  'without the helper, systemd-notify sends the messages',
  { skip: !existsSync('/usr/bin/systemd-notify') && 'no systemd-notify' },
  async (t) => {
    const sock = await fakeNotifySocket();
    t.teardown(() => sock.close());
    const n = SystemdNotifier.fromEnv({
      env: { NOTIFY_SOCKET: sock.path, PATH: process.env.PATH },
      helper: null,
      fallback: '/usr/bin/systemd-notify',
    });
    t.ok(n);
    n!.ready('up');
    // systemd-notify may follow with BARRIER=1 (systemd 246+ waits for the message to be read).
    await waitFor(() => sock.messages.includes('READY=1\nSTATUS=up'), 'READY=1 through systemd-notify', 30_000);
    t.same(
      sock.messages.filter((m) => m !== 'BARRIER=1'),
      ['READY=1\nSTATUS=up'],
    );
    await n!.close();
  },
);

t.test('a bad NOTIFY_SOCKET is a warning, not a failure', async (t) => {
  const warnings: string[] = [];
  t.equal(SystemdNotifier.fromEnv({ env: { NOTIFY_SOCKET: 'relative/path' }, warn: (w) => warnings.push(w) }), null);
  t.match(warnings[0], /neither a path nor an abstract socket/);
});
