import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import { ReleaseError } from '../../lib/release/errors.js';
import { RATIO_FLOOR, unpack } from '../../lib/release/unpack.js';
import { rawTar, zipOf } from '../helpers/hostile.js';

async function rejection(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: Error) => err,
  );
}

const MiB = 1024 * 1024;

t.test('a decompression bomb is refused by the ratio check and nothing is left', async (t) => {
  const dir = t.testdir();
  const zeros = Buffer.alloc(RATIO_FLOOR + 4 * MiB); // just past the floor: the ratio decides, not the size cap
  const tarBomb = path.join(dir, 'bomb.tar.gz');
  writeFileSync(tarBomb, gzipSync(rawTar([{ path: 'Procfile', body: 'web: x\n' }, { path: 'zeros', body: zeros }]), { level: 9 }));
  const zipBomb = path.join(dir, 'bomb.zip');
  writeFileSync(zipBomb, await zipOf([{ name: 'Procfile', body: 'web: x\n' }, { name: 'zeros', body: zeros }]));
  for (const file of [tarBomb, zipBomb]) {
    const size = statSync(file).size;
    t.ok(size * 100 < zeros.length, `the fixture compresses better than 100:1 (${size} bytes)`);
    const dest = path.join(dir, `out-${path.basename(file)}`);
    const err = await rejection(unpack(file, dest));
    t.type(err, ReleaseError);
    t.match(err.message, new RegExp(`^archive expands to more than 100 times its size \\(\\d+ bytes from ${size}\\): refusing a likely decompression bomb$`));
    t.notOk(existsSync(dest), 'nothing is left behind');
  }
  // The same archive is fine for an operator who raised the ratio.
  const ok = path.join(dir, 'ok');
  await unpack(zipBomb, ok, { maxRatio: 100_000 });
  t.equal(statSync(path.join(ok, 'zeros')).size, zeros.length);
});

t.test('the ratio counts the whole archive: many small entries add up', async (t) => {
  const dir = t.testdir();
  const entries = Array.from({ length: 20 }, (_, i) => ({ path: `part${i}`, body: Buffer.alloc(MiB) }));
  const file = path.join(dir, 'parts.tar.gz');
  writeFileSync(file, gzipSync(rawTar(entries), { level: 9 }));
  const dest = path.join(dir, 'out');
  const err = await rejection(unpack(file, dest));
  t.match(err.message, /refusing a likely decompression bomb/);
  t.notOk(existsSync(dest));
});

t.test('below the floor, small archives may compress as well as they like', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'small.tar.gz');
  writeFileSync(file, gzipSync(rawTar([{ path: 'Procfile', body: 'web: x\n' }, { path: 'zeros', body: Buffer.alloc(4 * MiB) }]), { level: 9 }));
  t.ok(statSync(file).size * 500 < 4 * MiB, 'ratio well over 500');
  await unpack(file, path.join(dir, 'out'));
  t.equal(statSync(path.join(dir, 'out', 'zeros')).size, 4 * MiB);
});

t.test('an ordinary archive past the floor passes at the default ratio, and fails a strict one', async (t) => {
  const dir = t.testdir();
  // Hex text compresses about 2:1, like source code does a little worse.
  const text = Buffer.from(randomBytes(RATIO_FLOOR / 2 + MiB).toString('hex'));
  const file = path.join(dir, 'text.tar.gz');
  writeFileSync(file, gzipSync(rawTar([{ path: 'Procfile', body: 'web: x\n' }, { path: 'data.hex', body: text }])));
  await unpack(file, path.join(dir, 'out'));
  t.equal(statSync(path.join(dir, 'out', 'data.hex')).size, text.length);
  const err = await rejection(unpack(file, path.join(dir, 'strict'), { maxRatio: 1 }));
  t.match(err.message, /^archive expands to more than 1 times its size/);
});

t.test('no group or world write, no setuid, setgid or sticky bits from an archive', async (t) => {
  const dir = t.testdir();
  const entries = [
    { path: 'open/', type: 'Directory' as const, mode: 0o777 },
    { path: 'open/all', body: 'x', mode: 0o777 },
    { path: 'open/rw', body: 'x', mode: 0o666 },
    { path: 'suid', body: 'x', mode: 0o4775 },
    { path: 'sticky/', type: 'Directory' as const, mode: 0o1777 },
    { path: 'implied/dir/file', body: 'x', mode: 0o600 },
  ];
  const file = path.join(dir, 'modes.tar');
  writeFileSync(file, rawTar(entries));
  const zipFile = path.join(dir, 'modes.zip');
  writeFileSync(zipFile, await zipOf([
    { name: 'open/', dir: true, mode: 0o40777 },
    { name: 'open/all', body: 'x', mode: 0o100777 },
    { name: 'open/rw', body: 'x', mode: 0o100666 },
    { name: 'suid', body: 'x', mode: 0o104775 },
    { name: 'sticky/', dir: true, mode: 0o41777 },
    { name: 'implied/dir/file', body: 'x', mode: 0o100600 },
  ]));
  for (const f of [file, zipFile]) {
    const out = path.join(dir, `out-${path.extname(f)}`);
    await unpack(f, out);
    const mode = (p: string) => statSync(path.join(out, p)).mode & 0o7777;
    t.equal(mode('open'), 0o755, `${f}: directory`);
    t.equal(mode('open/all'), 0o755);
    t.equal(mode('open/rw'), 0o644);
    t.equal(mode('suid'), 0o755);
    t.equal(mode('sticky'), 0o755);
    t.equal(mode('implied/dir/file'), 0o600);
    t.notOk(mode('implied') & 0o022, 'implied directories are not group/world writable');
    t.same(readdirSync(out).sort(), ['implied', 'open', 'sticky', 'suid']);
  }
});
