import t from 'tap';
import { createServer, type Server } from 'node:net';
import { PortPool, probePort } from '../../lib/os/ports.js';

t.test('the kernel picks a free port; a reserved one is never handed out twice', async (t) => {
  const pool = new PortPool();
  const seen = new Set<number>();
  for (let i = 0; i < 50; i++) {
    const p = await pool.reserve();
    t.notOk(seen.has(p), `port ${p} is new`);
    seen.add(p);
  }
  for (const p of seen) pool.release(p);
});

t.test('when the kernel keeps picking reserved ports, the range is walked in order, skipping ports in use', async (t) => {
  const inUse = new Set([50002]);
  const asked: number[] = [];
  // A kernel whose bind(0) always lands on 50000 (reserved below), as happens with thousands of processes.
  const pool = new PortPool({
    range: [50000, 50005],
    probe: async (port) => (asked.push(port), port === 0 ? 50000 : inUse.has(port) ? null : port),
  });
  pool.claim(50000);
  t.equal(await pool.reserve(), 50001);
  t.equal(await pool.reserve(), 50003, 'skips a port in use and the reserved ones');
  t.equal(await pool.reserve(), 50004);
  t.equal(await pool.reserve(), 50005);
  pool.release(50001);
  t.equal(await pool.reserve(), 50001, 'the walk wraps around to a released port');
  await t.rejects(pool.reserve(), /no free TCP port for \$PORT: all of 50000-50005 are in use or reserved/);
  t.ok(asked.filter((p) => p === 0).length >= 8, 'the kernel was asked first, each time');
});

t.test('the real probe: a port another program listens on is in use, a free one is free', async (t) => {
  const held: Server = createServer();
  await new Promise<void>((r) => held.listen(0, () => r()));
  t.teardown(() => held.close());
  const port = (held.address() as { port: number }).port;
  t.equal(await probePort(port), null, 'in use');
  const free = await probePort(0);
  t.type(free, 'number');
  t.equal(await probePort(free!), free, 'free, and closed again after the probe');
  // The walk uses the real probe: the held port is skipped.
  const pool = new PortPool({ range: [port, port], probe: (p) => (p === 0 ? Promise.resolve(null) : probePort(p)) });
  await t.rejects(pool.reserve(), /no free TCP port/);
});
