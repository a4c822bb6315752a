import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import t from 'tap';
import * as tar from 'tar';
import { ReleaseError } from '../../lib/release/errors.js';
import { detectFormat, RATIO_FLOOR, StreamUnpack, unpack } from '../../lib/release/unpack.js';
import { rawTar, renameInZip, zipOf, type TarEntry } from '../helpers/hostile.js';

// ---- fixture helpers -------------------------------------------------------

/** One pax record: "<len> key=value\n", where len counts itself. */
function paxRecord(key: string, value: string): string {
  const rest = ` ${key}=${value}\n`;
  let len = rest.length + 1;
  while (String(len).length + rest.length !== len) len++;
  return `${len}${rest}`;
}

async function makeTree(root: string, files: Record<string, string | { body: string; mode: number }>): Promise<void> {
  for (const [rel, spec] of Object.entries(files)) {
    const p = path.join(root, rel);
    await mkdir(path.dirname(p), { recursive: true });
    const body = typeof spec === 'string' ? spec : spec.body;
    await writeFile(p, body);
    if (typeof spec !== 'string') await chmod(p, spec.mode);
  }
}

async function rejectsRelease(t: Tap, p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
    t.fail(`expected rejection matching ${re}`);
  } catch (err) {
    t.ok(err instanceof ReleaseError, `ReleaseError (got ${(err as Error).name}: ${(err as Error).message})`);
    t.match((err as Error).message, re);
  }
}
type Tap = Pick<typeof t, 'ok' | 'match' | 'fail'>;

// ---- detectFormat ----------------------------------------------------------

t.test('detectFormat sniffs magic bytes, not names', async (t) => {
  const dir = t.testdir();
  await makeTree(path.join(dir, 'src'), { Procfile: 'web: x\n' });
  const tgz = path.join(dir, 'a.zip');
  await tar.c({ gzip: true, file: tgz, cwd: path.join(dir, 'src') }, ['.']);
  t.equal(await detectFormat(tgz), 'tar.gz');

  const plain = path.join(dir, 'b.tgz');
  await tar.c({ file: plain, cwd: path.join(dir, 'src') }, ['.']);
  t.equal(await detectFormat(plain), 'tar');

  const zip = path.join(dir, 'c.tar');
  writeFileSync(zip, await zipOf([{ name: 'Procfile', body: 'web: x\n' }]));
  t.equal(await detectFormat(zip), 'zip');

  const emptyZip = path.join(dir, 'empty.zip');
  const emptyBytes = await zipOf([]);
  t.equal(emptyBytes.readUInt32LE(0), 0x06054b50, 'fixture really is the empty-zip form');
  writeFileSync(emptyZip, emptyBytes);
  t.equal(await detectFormat(emptyZip), 'zip');

  // Pre-POSIX (v7) header: no "ustar" magic, only a valid checksum.
  const v7 = rawTar([{ path: 'Procfile', body: 'web: x\n' }]);
  v7.fill(0, 257, 512);
  v7.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += v7[i];
  v7.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  const v7file = path.join(dir, 'v7');
  writeFileSync(v7file, v7);
  t.equal(await detectFormat(v7file), 'tar');
  v7[0] ^= 1; // break the checksum
  writeFileSync(v7file, v7);
  await rejectsRelease(t, detectFormat(v7file), /^not a supported archive \(expected tar\.gz, tar or zip\)$/);

  const text = path.join(dir, 'readme.tar.gz');
  writeFileSync(text, 'hello, I am not an archive\n'.repeat(40));
  await rejectsRelease(t, detectFormat(text), /not a supported archive/);
  const tiny = path.join(dir, 'tiny');
  writeFileSync(tiny, 'PK');
  await rejectsRelease(t, detectFormat(tiny), /not a supported archive/);
  await rejectsRelease(t, unpack(text, path.join(dir, 'out')), /not a supported archive/);
});

// ---- happy paths -----------------------------------------------------------

t.test('unpacks tar.gz keeping exec bits; Procfile at root means root is destDir', async (t) => {
  const dir = t.testdir();
  const src = path.join(dir, 'src');
  await makeTree(src, {
    Procfile: 'web: node server.js\n',
    'server.js': 'console.log(1)\n',
    'bin/run': { body: '#!/bin/sh\necho hi\n', mode: 0o755 },
    'lib/deep/a.txt': 'a',
  });
  const file = path.join(dir, 'app.tar.gz');
  await tar.c({ gzip: true, file, cwd: src }, ['.']);
  const dest = path.join(dir, 'out');
  const root = await unpack(file, dest);
  t.equal(root, dest);
  t.equal(readFileSync(path.join(root, 'Procfile'), 'utf8'), 'web: node server.js\n');
  t.equal(readFileSync(path.join(root, 'lib/deep/a.txt'), 'utf8'), 'a');
  t.equal(statSync(path.join(root, 'bin/run')).mode & 0o777, 0o755);
});

t.test('GitHub-style archive: single top-level dir (after a pax global header) is the root', async (t) => {
  const dir = t.testdir();
  const tarball = rawTar([
    { path: 'pax_global_header', type: 'GlobalExtendedHeader', body: paxRecord('comment', 'a'.repeat(40)) },
    { path: 'owner-repo-abc123/', type: 'Directory' },
    { path: 'owner-repo-abc123/Procfile', body: 'web: x\n' },
    { path: 'owner-repo-abc123/src/index.js', body: '1' },
  ]);
  const file = path.join(dir, 'gh.tar.gz');
  writeFileSync(file, gzipSync(tarball));
  const dest = path.join(dir, 'out');
  const root = await unpack(file, dest);
  t.equal(root, path.join(dest, 'owner-repo-abc123'));
  t.same(await readdir(dest), ['owner-repo-abc123'], 'the global header is metadata, not a file');
  t.ok(existsSync(path.join(root, 'Procfile')));

  // A single directory next to a Procfile is not a wrapper.
  const file2 = path.join(dir, 'two.tar');
  writeFileSync(
    file2,
    rawTar([
      { path: 'Procfile', body: 'web: x\n' },
      { path: 'web/', type: 'Directory' },
    ]),
  );
  t.equal(await unpack(file2, path.join(dir, 'out2')), path.join(dir, 'out2'));
});

t.test('unpacks zip: files, dirs, exec bits, safe symlinks, single root dir', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'app.zip');
  writeFileSync(
    file,
    await zipOf([
      { name: 'app-main/', dir: true },
      { name: 'app-main/Procfile', body: 'web: ./bin/run\n' },
      { name: 'app-main/bin/run', body: '#!/bin/sh\n', mode: 0o104755 }, // setuid must be dropped
      { name: 'app-main/data/x.txt', body: 'x' },
      { name: 'app-main/current', body: 'data/x.txt', mode: 0o120777 },
    ]),
  );
  const dest = path.join(dir, 'out');
  const root = await unpack(file, dest);
  t.equal(root, path.join(dest, 'app-main'));
  t.equal(readFileSync(path.join(root, 'Procfile'), 'utf8'), 'web: ./bin/run\n');
  t.equal(statSync(path.join(root, 'bin/run')).mode & 0o7777, 0o755);
  t.ok(lstatSync(path.join(root, 'current')).isSymbolicLink());
  t.equal(readlinkSync(path.join(root, 'current')), 'data/x.txt');
  t.equal(readFileSync(path.join(root, 'current'), 'utf8'), 'x');
});

t.test('tar: special files skipped, setuid dropped, safe links kept', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'a.tar');
  writeFileSync(
    file,
    rawTar([
      { path: 'Procfile', body: 'web: x\n' },
      { path: 'suid', body: '#!/bin/sh\n', mode: 0o6755 },
      { path: 'dev', type: 'CharacterDevice' },
      { path: 'fifo', type: 'FIFO' },
      { path: 'sub/target', body: 'T' },
      { path: 'sub/rel', type: 'SymbolicLink', linkpath: '../Procfile' },
      { path: 'hard', type: 'Link', linkpath: 'sub/target' },
    ]),
  );
  const dest = path.join(dir, 'out');
  await unpack(file, dest);
  t.equal(statSync(path.join(dest, 'suid')).mode & 0o7777, 0o755);
  t.notOk(existsSync(path.join(dest, 'dev')));
  t.notOk(existsSync(path.join(dest, 'fifo')));
  t.equal(readlinkSync(path.join(dest, 'sub/rel')), '../Procfile');
  t.equal(readFileSync(path.join(dest, 'hard'), 'utf8'), 'T');
});

// ---- hostile archives ------------------------------------------------------

t.test('tar entries that escape are rejected and nothing is left behind', async (t) => {
  const cases: Array<[string, TarEntry[], RegExp]> = [
    [
      'dot-dot path',
      [
        { path: 'ok', body: '1' },
        { path: '../evil', body: 'x' },
      ],
      /^archive entry "\.\.\/evil" escapes the release directory$/,
    ],
    ['nested dot-dot', [{ path: 'a/../../evil', body: 'x' }], /escapes the release directory/],
    ['absolute path', [{ path: '/tmp/drover-evil', body: 'x' }], /^archive entry "\/tmp\/drover-evil" has an absolute path$/],
    [
      'symlink out',
      [{ path: 'link', type: 'SymbolicLink', linkpath: '../../evil' }],
      /^archive symlink "link" -> "\.\.\/\.\.\/evil" escapes/,
    ],
    ['absolute symlink', [{ path: 'etc', type: 'SymbolicLink', linkpath: '/etc' }], /symlink "etc" -> "\/etc" escapes/],
    ['hard link out', [{ path: 'h', type: 'Link', linkpath: '../evil' }], /hard link "h" -> "\.\.\/evil" escapes/],
    ['hard link to /etc/passwd', [{ path: 'h', type: 'Link', linkpath: '/etc/passwd' }], /hard link "h" -> "\/etc\/passwd" escapes/],
    [
      'write through a symlink',
      [
        { path: 'sub/', type: 'Directory' },
        { path: 'l', type: 'SymbolicLink', linkpath: 'sub' },
        { path: 'l/x', body: 'x' },
      ],
      /archive entry "l\/x" is inside symlink "l"/,
    ],
    [
      // Fine when written, but a later link makes it resolve outside.
      'symlink chain decided by a later entry',
      [
        { path: 'l2', type: 'SymbolicLink', linkpath: 'x/../..' },
        { path: 'x', type: 'SymbolicLink', linkpath: '.' },
      ],
      /archive symlink "l2" -> "x\/\.\.\/\.\." escapes/,
    ],
    [
      'symlink loop',
      [
        { path: 'a', type: 'SymbolicLink', linkpath: 'b/c' },
        { path: 'b', type: 'SymbolicLink', linkpath: 'a/c' },
      ],
      // node-tar itself refuses a link through a link; either refusal will do
      /escapes the release directory|Cannot extract through symbolic link/,
    ],
  ];
  for (const [name, entries, re] of cases) {
    await t.test(name, async (t) => {
      const dir = t.testdir();
      const file = path.join(dir, 'evil.tar.gz');
      writeFileSync(file, gzipSync(rawTar(entries)));
      const dest = path.join(dir, 'box', 'dest');
      await rejectsRelease(t, unpack(file, dest), re);
      t.notOk(existsSync(dest), 'the half-unpacked directory is removed');
      t.same(await readdir(path.join(dir, 'box')), [], 'nothing landed next to it');
    });
  }
  t.notOk(existsSync('/tmp/drover-evil'));
});

t.test('zip entries that escape are rejected', async (t) => {
  const cases: Array<[string, () => Promise<Buffer>, RegExp]> = [
    [
      'dot-dot name',
      async () => renameInZip(await zipOf([{ name: 'AA/evil', body: 'x' }]), 'AA/evil', '../evil'),
      /^archive entry "\.\.\/evil" escapes the release directory$/,
    ],
    [
      'absolute name',
      async () => renameInZip(await zipOf([{ name: 'Xtmp/evil', body: 'x' }]), 'Xtmp/evil', '/tmp/evil'),
      /archive entry "\/tmp\/evil" escapes/,
    ],
    [
      'symlink out',
      () => zipOf([{ name: 'link', body: '../../etc', mode: 0o120777 }]),
      /^archive symlink "link" -> "\.\.\/\.\.\/etc" escapes/,
    ],
    ['absolute symlink', () => zipOf([{ name: 'link', body: '/etc', mode: 0o120777 }]), /symlink "link" -> "\/etc" escapes/],
    [
      'write through a symlink',
      () =>
        zipOf([
          { name: 'sub/', dir: true },
          { name: 'l', body: 'sub', mode: 0o120777 },
          { name: 'l/x', body: 'x' },
        ]),
      /archive entry "l\/x" is inside symlink "l"/,
    ],
  ];
  for (const [name, make, re] of cases) {
    await t.test(name, async (t) => {
      const dir = t.testdir();
      const file = path.join(dir, 'evil.zip');
      writeFileSync(file, await make());
      const dest = path.join(dir, 'box', 'dest');
      await rejectsRelease(t, unpack(file, dest), re);
      t.notOk(existsSync(dest));
      t.same(await readdir(path.join(dir, 'box')), []);
    });
  }
});

// ---- caps ------------------------------------------------------------------

t.test('entry-count cap', async (t) => {
  const dir = t.testdir();
  const entries = Array.from({ length: 5 }, (_, i) => ({ path: `f${i}`, body: 'x' }));
  const tarFile = path.join(dir, 'many.tar.gz');
  writeFileSync(tarFile, gzipSync(rawTar(entries)));
  await rejectsRelease(t, unpack(tarFile, path.join(dir, 'o1'), { maxEntries: 3 }), /^archive has more than 3 entries$/);
  t.equal(await unpack(tarFile, path.join(dir, 'o2'), { maxEntries: 5 }), path.join(dir, 'o2'), 'exactly at the cap is fine');

  const zipFile = path.join(dir, 'many.zip');
  writeFileSync(zipFile, await zipOf(entries.map((e) => ({ name: e.path, body: e.body }))));
  await rejectsRelease(t, unpack(zipFile, path.join(dir, 'o3'), { maxEntries: 3 }), /^archive has more than 3 entries$/);
  t.notOk(existsSync(path.join(dir, 'o3')));
});

t.test('uncompressed size cap (a small, highly compressible bomb)', async (t) => {
  const dir = t.testdir();
  const big = Buffer.alloc(200_000, 'a');
  const tarFile = path.join(dir, 'bomb.tar.gz');
  const tar = rawTar([
    { path: 'a', body: 'x' },
    { path: 'big', body: big },
  ]);
  writeFileSync(tarFile, gzipSync(tar));
  t.ok(statSync(tarFile).size < 10_000, 'fixture compresses well');
  await rejectsRelease(t, unpack(tarFile, path.join(dir, 'o1'), { maxBytes: 100_000 }), /^archive exceeds 100000 bytes uncompressed$/);
  t.notOk(existsSync(path.join(dir, 'o1')));
  // Every decompressed byte counts (headers and padding too), not only the entries' bodies.
  await rejectsRelease(t, unpack(tarFile, path.join(dir, 'o3'), { maxBytes: 200_001 }), /^archive exceeds 200001 bytes uncompressed$/);
  await unpack(tarFile, path.join(dir, 'o2'), { maxBytes: tar.length });
  t.equal(statSync(path.join(dir, 'o2/big')).size, 200_000);

  const zipFile = path.join(dir, 'bomb.zip');
  writeFileSync(
    zipFile,
    await zipOf([
      { name: 'a', body: 'x' },
      { name: 'big', body: big.toString() },
    ]),
  );
  await rejectsRelease(t, unpack(zipFile, path.join(dir, 'o3'), { maxBytes: 100_000 }), /^archive exceeds 100000 bytes uncompressed$/);
  t.notOk(existsSync(path.join(dir, 'o3')));
});

t.test('zip whose headers understate the real size is rejected', async (t) => {
  const dir = t.testdir();
  const body = 'b'.repeat(5000);
  let zip = await zipOf([{ name: 'liar', body }]);
  // Patch the central directory's uncompressed size (offset 24 in its 46-byte header) to 10.
  const cd = zip.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  t.equal(zip.readUInt32LE(cd + 24), 5000);
  zip = Buffer.from(zip);
  zip.writeUInt32LE(10, cd + 24);
  const file = path.join(dir, 'liar.zip');
  writeFileSync(file, zip);
  try {
    await unpack(file, path.join(dir, 'out'), { maxBytes: 1000 });
    t.fail('should reject');
  } catch (err) {
    t.ok(err instanceof ReleaseError);
    t.notOk(existsSync(path.join(dir, 'out')));
  }
});

// ---- abort -----------------------------------------------------------------

t.test('abort: already aborted, and mid-unpack', async (t) => {
  const dir = t.testdir();
  const entries = Array.from({ length: 3000 }, (_, i) => ({ path: `d${i % 30}/f${i}`, body: 'x'.repeat(100) }));
  const file = path.join(dir, 'many.tar.gz');
  writeFileSync(file, gzipSync(rawTar(entries)));

  const pre = new AbortController();
  pre.abort();
  await t.rejects(unpack(file, path.join(dir, 'o1'), { signal: pre.signal }), { name: 'AbortError' });
  t.notOk(existsSync(path.join(dir, 'o1')));

  const ac = new AbortController();
  const dest = path.join(dir, 'o2');
  const p = unpack(file, dest, { signal: ac.signal });
  const outcome = p.then(
    () => 'resolved',
    (err: Error) => err.name,
  );
  // Abort as soon as extraction has visibly started.
  while (!existsSync(path.join(dest, 'd0'))) await tick();
  ac.abort();
  t.equal(await outcome, 'AbortError');
  t.notOk(existsSync(dest), 'partial output removed');

  const zdir = path.join(dir, 'z');
  await mkdir(zdir);
  const zipFile = path.join(zdir, 'many.zip');
  writeFileSync(zipFile, await zipOf(entries.slice(0, 500).map((e) => ({ name: e.path, body: e.body }))));
  const ac2 = new AbortController();
  const zdest = path.join(zdir, 'out');
  const zp = unpack(zipFile, zdest, { signal: ac2.signal }).then(
    () => 'resolved',
    (err: Error) => err.name,
  );
  while (!existsSync(path.join(zdest, 'd0'))) await tick();
  ac2.abort();
  t.equal(await zp, 'AbortError');
  t.notOk(existsSync(zdest));
});

// ---- limits: compression ratio, modes -------------------------------------

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
  writeFileSync(
    tarBomb,
    gzipSync(
      rawTar([
        { path: 'Procfile', body: 'web: x\n' },
        { path: 'zeros', body: zeros },
      ]),
      { level: 9 },
    ),
  );
  const zipBomb = path.join(dir, 'bomb.zip');
  writeFileSync(
    zipBomb,
    await zipOf([
      { name: 'Procfile', body: 'web: x\n' },
      { name: 'zeros', body: zeros },
    ]),
  );
  for (const file of [tarBomb, zipBomb]) {
    const size = statSync(file).size;
    t.ok(size * 100 < zeros.length, `the fixture compresses better than 100:1 (${size} bytes)`);
    const dest = path.join(dir, `out-${path.basename(file)}`);
    const err = await rejection(unpack(file, dest));
    t.type(err, ReleaseError);
    t.match(
      err.message,
      new RegExp(`^archive expands to more than 100 times its size \\(\\d+ bytes from ${size}\\): refusing a likely decompression bomb$`),
    );
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
  writeFileSync(
    file,
    gzipSync(
      rawTar([
        { path: 'Procfile', body: 'web: x\n' },
        { path: 'zeros', body: Buffer.alloc(4 * MiB) },
      ]),
      { level: 9 },
    ),
  );
  t.ok(statSync(file).size * 500 < 4 * MiB, 'ratio well over 500');
  await unpack(file, path.join(dir, 'out'));
  t.equal(statSync(path.join(dir, 'out', 'zeros')).size, 4 * MiB);
});

t.test('an ordinary archive past the floor passes at the default ratio, and fails a strict one', async (t) => {
  const dir = t.testdir();
  // Hex text compresses about 2:1, like source code does a little worse.
  const text = Buffer.from(randomBytes(RATIO_FLOOR / 2 + MiB).toString('hex'));
  const file = path.join(dir, 'text.tar.gz');
  writeFileSync(
    file,
    gzipSync(
      rawTar([
        { path: 'Procfile', body: 'web: x\n' },
        { path: 'data.hex', body: text },
      ]),
    ),
  );
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
  writeFileSync(
    zipFile,
    await zipOf([
      { name: 'open/', dir: true, mode: 0o40777 },
      { name: 'open/all', body: 'x', mode: 0o100777 },
      { name: 'open/rw', body: 'x', mode: 0o100666 },
      { name: 'suid', body: 'x', mode: 0o104775 },
      { name: 'sticky/', dir: true, mode: 0o41777 },
      { name: 'implied/dir/file', body: 'x', mode: 0o100600 },
    ]),
  );
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

t.test('data after the end-of-archive marker: counted, a little allowed, the rest refused', async (t) => {
  const dir = t.testdir();
  const tarBytes = rawTar([{ path: 'Procfile', body: 'web: x\n' }]);
  // Padding to a 10 KiB record, as GNU tar writes, plus some: still unpacked.
  const padded = path.join(dir, 'padded.tar.gz');
  writeFileSync(padded, gzipSync(Buffer.concat([tarBytes, Buffer.alloc(64 * 1024)])));
  const root = await unpack(padded, path.join(dir, 'o1'));
  t.equal(readFileSync(path.join(root, 'Procfile'), 'utf8'), 'web: x\n');

  // 32 MiB of zeros after the marker: some 32 KiB of gzip, within every cap on the entries.
  const zeros = path.join(dir, 'zeros.tar.gz');
  writeFileSync(zeros, gzipSync(Buffer.concat([tarBytes, Buffer.alloc(32 * 1024 * 1024)]), { level: 9 }));
  t.ok(statSync(zeros).size < 64 * 1024, 'a small file');
  // The event loop keeps turning meanwhile: count the turns.
  let turns = 0;
  let spinning = true;
  const spin = async () => {
    while (spinning) {
      await tick();
      turns++;
    }
  };
  const spun = spin();
  await rejectsRelease(t, unpack(zeros, path.join(dir, 'o2')), /after its end-of-archive marker/);
  spinning = false;
  await spun;
  t.ok(turns > 10, `the event loop turned ${turns} times while the archive was refused`);
  t.notOk(existsSync(path.join(dir, 'o2')));
});

t.test('a gzip that holds no tar is refused before node-tar sees it', async (t) => {
  const dir = t.testdir();
  const nested = path.join(dir, 'nested.tar.gz');
  writeFileSync(nested, gzipSync(gzipSync(rawTar([{ path: 'Procfile', body: 'web: x\n' }]))));
  await rejectsRelease(t, unpack(nested, path.join(dir, 'o')), /not a tar archive/);
});

// ---- StreamUnpack: unpacking while the bytes arrive -------------------------

/** Feeds `file` to a StreamUnpack in small pieces, as a download would; the writer must never fail. */
async function streamUnpack(file: string, dest: string, archiveBytes: number | null = statSync(file).size): Promise<string> {
  const s = new StreamUnpack(dest, { archiveBytes });
  await pipeline(createReadStream(file, { highWaterMark: 7000 }), s);
  return s.result;
}

/** A sorted listing of a tree: relative path, type, size, mode. */
function listing(root: string): string[] {
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .map((e) => {
      const p = path.join(e.parentPath, e.name);
      const st = lstatSync(p);
      return `${path.relative(root, p)} ${e.isSymbolicLink() ? 'l' : e.isDirectory() ? 'd' : 'f'} ${st.isFile() ? st.size : ''} ${(st.mode & 0o7777).toString(8)}`;
    })
    .sort();
}

t.test('StreamUnpack unpacks tar.gz and tar as unpack() does, small archives too', async (t) => {
  const dir = t.testdir();
  const src = path.join(dir, 'src');
  await makeTree(src, {
    'app-1/Procfile': 'web: x\n',
    'app-1/bin/run': { body: '#!/bin/sh\n', mode: 0o755 },
    'app-1/data.bin': randomBytes(3 * MiB).toString('latin1'),
  });
  const gz = path.join(dir, 'a.tar.gz');
  await tar.c({ gzip: true, file: gz, cwd: src }, ['app-1']);
  const plain = path.join(dir, 'a.tar');
  await tar.c({ file: plain, cwd: src }, ['app-1']);
  const tiny = path.join(dir, 'tiny.tar.gz');
  writeFileSync(tiny, gzipSync(rawTar([{ path: 'Procfile', body: 'web: x\n' }])));
  t.ok(statSync(tiny).size < 512, 'the tiny one is smaller than a tar block');
  for (const file of [gz, plain, tiny]) {
    const name = path.basename(file);
    const viaFile = await unpack(file, path.join(dir, `file-${name}`));
    for (const size of [statSync(file).size, null]) {
      const dest = path.join(dir, `stream-${name}-${size ?? 'unknown'}`);
      const root = await streamUnpack(file, dest, size);
      t.equal(path.relative(dest, root), path.relative(path.join(dir, `file-${name}`), viaFile), `${name}: the same app root`);
      t.same(listing(dest), listing(path.join(dir, `file-${name}`)), `${name}: the same tree (size ${size ?? 'unknown'})`);
    }
  }
});

t.test('StreamUnpack refuses what unpack() refuses, with its message, and leaves nothing', async (t) => {
  const dir = t.testdir();
  const cases: Array<[string, Buffer]> = [
    [
      'dot-dot',
      gzipSync(
        rawTar([
          { path: 'ok', body: '1' },
          { path: '../evil', body: 'x' },
        ]),
      ),
    ],
    ['symlink out', gzipSync(rawTar([{ path: 'link', type: 'SymbolicLink', linkpath: '../../evil' }]))],
    [
      'a later symlink makes an earlier one escape',
      gzipSync(
        rawTar([
          { path: 'a', type: 'SymbolicLink', linkpath: 'b/..' },
          { path: 'b', type: 'SymbolicLink', linkpath: '..' },
        ]),
      ),
    ],
    ['not a tar inside', gzipSync(Buffer.alloc(2048, 'x'))],
    ['no archive at all', Buffer.from('hello, world\n')],
    ['zip', await zipOf([{ name: 'Procfile', body: 'web: x\n' }])],
  ];
  for (const [name, bytes] of cases) {
    const file = path.join(dir, `${name}.archive`);
    writeFileSync(file, bytes);
    const dest = path.join(dir, 'stream-out');
    const streamed = await rejection(streamUnpack(file, dest));
    if (name === 'zip') t.match(streamed.message, /zip archive is not unpacked while it downloads/, 'zip: left to unpack()');
    else {
      const viaFile = await rejection(unpack(file, path.join(dir, 'file-out')));
      t.equal(streamed.message, viaFile.message, `${name}: ${viaFile.message}`);
    }
    t.notOk(existsSync(dest), `${name}: nothing left behind`);
    t.same(
      readdirSync(dir).filter((n) => !n.endsWith('.archive')),
      [],
      `${name}: no other leftovers`,
    );
  }
});

t.test('StreamUnpack: the ratio is checked again against the real size at the end', async (t) => {
  const dir = t.testdir();
  const bomb = path.join(dir, 'bomb.tar.gz');
  writeFileSync(bomb, gzipSync(rawTar([{ path: 'zeros', body: Buffer.alloc(RATIO_FLOOR + 4 * MiB) }]), { level: 9 }));
  const size = statSync(bomb).size;
  // A declared size far above the real one must not let the bomb through.
  const err = await rejection(streamUnpack(bomb, path.join(dir, 'out'), 1000 * size));
  t.match(err.message, new RegExp(`^archive expands to more than 100 times its size \\(\\d+ bytes from ${size}\\)`));
  t.notOk(existsSync(path.join(dir, 'out')));
});

t.test('StreamUnpack destroyed mid-archive (a failed download) rejects and removes what it wrote', async (t) => {
  const dir = t.testdir();
  const src = path.join(dir, 'src');
  await makeTree(src, { 'a.bin': randomBytes(2 * MiB).toString('latin1'), 'b.bin': randomBytes(4 * MiB).toString('latin1') });
  const gz = path.join(dir, 'a.tar.gz');
  await tar.c({ gzip: true, file: gz, cwd: src }, ['a.bin', 'b.bin']);
  const bytes = readFileSync(gz);
  const dest = path.join(dir, 'out');
  const s = new StreamUnpack(dest, { archiveBytes: bytes.length });
  s.write(bytes.subarray(0, Math.floor(bytes.length * 0.75)));
  // Wait until the unpack has really written something, then cut.
  while (!existsSync(path.join(dest, 'a.bin'))) await tick();
  s.destroy(new Error('connection reset'));
  const err = await rejection(s.result);
  t.match(err.message, /connection reset/);
  t.notOk(existsSync(dest), 'nothing left behind');
  t.same(readdirSync(dir).sort(), ['a.tar.gz', 'src']);
});
