import { existsSync, lstatSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import * as tar from 'tar';
import yazl from 'yazl';
import { ReleaseError } from '../../lib/release/errors.js';
import { detectFormat, unpack } from '../../lib/release/unpack.js';

// ---- fixture helpers -------------------------------------------------------

interface RawEntry {
  path: string;
  type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'CharacterDevice' | 'FIFO' | 'GlobalExtendedHeader';
  body?: string | Buffer;
  linkpath?: string;
  mode?: number;
}

/** A tar built block by block with node-tar's Header, so it can hold entries no sane packer would write. */
function rawTar(entries: RawEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const type = e.type ?? 'File';
    const h = new tar.Header({
      path: e.path,
      type,
      linkpath: e.linkpath,
      mode: e.mode ?? (type === 'Directory' ? 0o755 : 0o644),
      size: body.length,
      mtime: new Date(1700000000000),
      uid: 1000,
      gid: 1000,
    });
    h.encode();
    blocks.push(h.block!, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

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

interface ZipItem {
  name: string;
  body?: string;
  mode?: number;
  dir?: boolean;
}

function makeZip(items: ZipItem[]): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const it of items) {
    if (it.dir) zip.addEmptyDirectory(it.name, it.mode != null ? { mode: it.mode } : {});
    else zip.addBuffer(Buffer.from(it.body ?? ''), it.name, it.mode != null ? { mode: it.mode } : {});
  }
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c));
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
    zip.outputStream.on('error', reject);
  });
}

/** yazl refuses unsafe names, so write a same-length placeholder and patch the bytes. */
function renameInZip(zip: Buffer, from: string, to: string): Buffer {
  if (from.length !== to.length) throw new Error('names must have equal length');
  const out = Buffer.from(zip);
  let n = 0;
  for (let i = out.indexOf(from); i !== -1; i = out.indexOf(from, i + 1)) {
    out.write(to, i, 'latin1');
    n++;
  }
  if (n !== 2) throw new Error(`expected the name in local and central headers, found ${n}`);
  return out;
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
  writeFileSync(zip, await makeZip([{ name: 'Procfile', body: 'web: x\n' }]));
  t.equal(await detectFormat(zip), 'zip');

  const emptyZip = path.join(dir, 'empty.zip');
  const emptyBytes = await makeZip([]);
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
  writeFileSync(file2, rawTar([{ path: 'Procfile', body: 'web: x\n' }, { path: 'web/', type: 'Directory' }]));
  t.equal(await unpack(file2, path.join(dir, 'out2')), path.join(dir, 'out2'));
});

t.test('unpacks zip: files, dirs, exec bits, safe symlinks, single root dir', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'app.zip');
  writeFileSync(
    file,
    await makeZip([
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
  const cases: Array<[string, RawEntry[], RegExp]> = [
    ['dot-dot path', [{ path: 'ok', body: '1' }, { path: '../evil', body: 'x' }], /^archive entry "\.\.\/evil" escapes the release directory$/],
    ['nested dot-dot', [{ path: 'a/../../evil', body: 'x' }], /escapes the release directory/],
    ['absolute path', [{ path: '/tmp/drover-evil', body: 'x' }], /^archive entry "\/tmp\/drover-evil" has an absolute path$/],
    ['symlink out', [{ path: 'link', type: 'SymbolicLink', linkpath: '../../evil' }], /^archive symlink "link" -> "\.\.\/\.\.\/evil" escapes/],
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
    ['dot-dot name', async () => renameInZip(await makeZip([{ name: 'AA/evil', body: 'x' }]), 'AA/evil', '../evil'), /^archive entry "\.\.\/evil" escapes the release directory$/],
    ['absolute name', async () => renameInZip(await makeZip([{ name: 'Xtmp/evil', body: 'x' }]), 'Xtmp/evil', '/tmp/evil'), /archive entry "\/tmp\/evil" escapes/],
    ['symlink out', () => makeZip([{ name: 'link', body: '../../etc', mode: 0o120777 }]), /^archive symlink "link" -> "\.\.\/\.\.\/etc" escapes/],
    ['absolute symlink', () => makeZip([{ name: 'link', body: '/etc', mode: 0o120777 }]), /symlink "link" -> "\/etc" escapes/],
    [
      'write through a symlink',
      () =>
        makeZip([
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
  writeFileSync(zipFile, await makeZip(entries.map((e) => ({ name: e.path, body: e.body }))));
  await rejectsRelease(t, unpack(zipFile, path.join(dir, 'o3'), { maxEntries: 3 }), /^archive has more than 3 entries$/);
  t.notOk(existsSync(path.join(dir, 'o3')));
});

t.test('uncompressed size cap (a small, highly compressible bomb)', async (t) => {
  const dir = t.testdir();
  const big = Buffer.alloc(200_000, 'a');
  const tarFile = path.join(dir, 'bomb.tar.gz');
  writeFileSync(tarFile, gzipSync(rawTar([{ path: 'a', body: 'x' }, { path: 'big', body: big }])));
  t.ok(statSync(tarFile).size < 10_000, 'fixture compresses well');
  await rejectsRelease(t, unpack(tarFile, path.join(dir, 'o1'), { maxBytes: 100_000 }), /^archive exceeds 100000 bytes uncompressed$/);
  t.notOk(existsSync(path.join(dir, 'o1')));
  await unpack(tarFile, path.join(dir, 'o2'), { maxBytes: 200_001 });
  t.equal(statSync(path.join(dir, 'o2/big')).size, 200_000);

  const zipFile = path.join(dir, 'bomb.zip');
  writeFileSync(zipFile, await makeZip([{ name: 'a', body: 'x' }, { name: 'big', body: big.toString() }]));
  await rejectsRelease(t, unpack(zipFile, path.join(dir, 'o3'), { maxBytes: 100_000 }), /^archive exceeds 100000 bytes uncompressed$/);
  t.notOk(existsSync(path.join(dir, 'o3')));
});

t.test('zip whose headers understate the real size is rejected', async (t) => {
  const dir = t.testdir();
  const body = 'b'.repeat(5000);
  let zip = await makeZip([{ name: 'liar', body }]);
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
  writeFileSync(zipFile, await makeZip(entries.slice(0, 500).map((e) => ({ name: e.path, body: e.body }))));
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
