// Unpack an untrusted release archive (tar.gz, tar or zip) into a fresh directory.
// Parsing is left to node-tar and yauzl; this file adds the policy on top: no entry
// may land or point outside the directory, no special files, no setuid bits, no
// group/world write, and caps on total size, entry count and compression ratio.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, symlink } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Transform, Writable, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { Unpack, type ReadEntry } from 'tar';
import type { Entry, ZipFile } from 'yauzl';
import { abortReason, ReleaseError } from './errors.js';

export type ArchiveFormat = 'tar.gz' | 'tar' | 'zip';

export interface UnpackOptions {
  signal?: AbortSignal;
  /** Cap on total uncompressed bytes (default 1 GiB). */
  maxBytes?: number;
  /** Cap on the number of entries (default 100000). */
  maxEntries?: number;
  /** Uncompressed bytes allowed per byte of archive, once past RATIO_FLOOR (default 100). */
  maxRatio?: number;
}

const DEFAULT_MAX_BYTES = 1024 ** 3;
const DEFAULT_MAX_ENTRIES = 100_000;
const MAX_SYMLINK_HOPS = 40; // like the kernel's ELOOP limit
const MAX_LINK_TARGET = 4096;
const DEFAULT_MAX_RATIO = 100;
// Small archives may compress better than any sane ratio (a tiny tree of repetitive text); below
// this many uncompressed bytes the ratio is not checked, the absolute caps still are.
export const RATIO_FLOOR = 16 * 1024 * 1024;
// Release files are the app's to read and run, never anyone else's to change.
const MODE_MASK = 0o755;
// The tar path reads, inflates and hands node-tar big pieces: each piece is a round trip to the
// thread pool (read, inflate, write), and at 64/16 KiB those round trips, not the work, set the
// pace (the bench's 100 MB tar.gz took 1.2-1.6 s from its file, 0.45-0.6 s with 1 MiB reads).
const READ_CHUNK = 1024 * 1024;
const INFLATE_CHUNK = 1024 * 1024;

/** Sniff the archive type from its first bytes; the file name is not trusted. */
export async function detectFormat(file: string): Promise<ArchiveFormat> {
  const fh = await open(file, 'r');
  let head: Buffer;
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    head = buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  return sniffFormat(head);
}

/** The archive type from its first (up to) 512 bytes. */
export function sniffFormat(head: Buffer): ArchiveFormat {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'tar.gz';
  if (head[0] === 0x50 && head[1] === 0x4b && ((head[2] === 3 && head[3] === 4) || (head[2] === 5 && head[3] === 6))) {
    return 'zip';
  }
  if (head.length === 512 && (head.toString('latin1', 257, 262) === 'ustar' || v7ChecksumOk(head))) return 'tar';
  throw new ReleaseError('not a supported archive (expected tar.gz, tar or zip)');
}

// Pre-POSIX tars have no magic; a header whose checksum adds up is the best evidence.
function v7ChecksumOk(block: Buffer): boolean {
  const field = block
    .toString('latin1', 148, 156)
    .replace(/[\0 ]+$/, '')
    .trim();
  if (!/^[0-7]+$/.test(field) || block[0] === 0) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i];
  return sum === parseInt(field, 8);
}

/**
 * Unpack `file` into `destDir` (created if missing; removed again if unpacking
 * fails, so pass a directory dedicated to this archive). Returns the app root:
 * the single top-level directory of GitHub-style archives, else destDir.
 */
export async function unpack(file: string, destDir: string, opts: UnpackOptions = {}): Promise<string> {
  opts.signal?.throwIfAborted();
  const format = await detectFormat(file);
  const archiveBytes = (await stat(file)).size;
  const guard = newGuard(opts, () => archiveBytes);
  return unpackInto(path.resolve(destDir), format, opts.signal, guard, (dest) =>
    format === 'zip'
      ? extractZip(file, dest, guard, opts.signal)
      : extractTar(createReadStream(file, { highWaterMark: READ_CHUNK }), format, dest, guard, opts.signal),
  );
}

function newGuard(opts: UnpackOptions, archiveBytes: () => number): EntryGuard {
  return new EntryGuard(
    opts.maxBytes ?? DEFAULT_MAX_BYTES,
    opts.maxEntries ?? DEFAULT_MAX_ENTRIES,
    opts.maxRatio ?? DEFAULT_MAX_RATIO,
    archiveBytes,
  );
}

/** Runs `extract` into `dest` (created), then the checks on the whole tree; removes `dest` if anything fails. */
async function unpackInto(
  dest: string,
  format: ArchiveFormat,
  signal: AbortSignal | undefined,
  guard: EntryGuard,
  extract: (dest: string) => Promise<void>,
): Promise<string> {
  await mkdir(dest, { recursive: true });
  try {
    await extract(dest);
    signal?.throwIfAborted();
    guard.checkLinks();
    return await appRoot(dest);
  } catch (err) {
    await discard(dest);
    if (signal?.aborted) throw abortReason(signal);
    if (err instanceof ReleaseError) throw err;
    throw new ReleaseError(`cannot unpack ${format} archive: ${(err as Error).message}`);
  }
}

/** Bytes gathered before they go on to the inflater: as for READ_CHUNK, fewer, bigger pieces. */
const STREAM_BATCH = 1024 * 1024;

/**
 * Unpacks a tar or tar.gz archive from the bytes written to it, while they arrive (a download
 * teed into it), under the same policy and caps as unpack(); `archiveBytes` is the size the
 * archive is expected to have (Content-Length), if known. `result` gives the app root once
 * the writer has ended and everything is unpacked, or rejects (with `destDir` removed) when
 * the archive cannot be unpacked this way: a zip (needs random access), anything else not
 * recognized, a policy failure, or a destroy() (the download failed). It never fails its
 * writer: after a failure the bytes are swallowed, so the download goes on and unpack() of
 * the downloaded file decides, with its own errors, what the archive is.
 */
export class StreamUnpack extends Writable {
  /** Bytes written so far (all of the archive once the writer has ended). */
  bytes = 0;
  readonly result: Promise<string>;
  private settle!: { resolve: (root: string) => void; reject: (err: unknown) => void };
  private input: PassThrough | null = null;
  private failed = false;
  private batch: Buffer[] = [];
  private batchBytes = 0;
  /** A write waiting for the inflater to take more. */
  private waiting: (() => void) | null = null;
  private readonly dest: string;

  constructor(
    destDir: string,
    private readonly opts: UnpackOptions & { archiveBytes?: number | null } = {},
  ) {
    super();
    this.dest = path.resolve(destDir);
    this.result = new Promise<string>((resolve, reject) => (this.settle = { resolve, reject }));
    // Rejections are the owner's to look at (or not): never unhandled. A destroy(err) by the
    // writer is reported there too, not as an 'error' nobody may be listening for.
    this.result.catch(() => {});
    this.on('error', () => {});
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.bytes += chunk.length;
    if (this.failed) return cb();
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes < STREAM_BATCH) return cb();
    this.forward(false, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.forward(true, cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // (After a normal end it is destroyed too, by autoDestroy: the unpack goes on then.)
    if (err || !this.writableFinished) this.fail(err ?? new Error('the archive ended early'));
    cb(err);
  }

  /** Hands the gathered bytes on (starting the unpack with the first of them); `last` ends the input. */
  private forward(last: boolean, cb: () => void): void {
    if (this.failed) return cb();
    const buf = Buffer.concat(this.batch, this.batchBytes);
    this.batch = [];
    this.batchBytes = 0;
    const input = this.input ?? this.start(buf);
    if (!input) return cb();
    if (last) {
      input.end(buf);
      return cb();
    }
    if (input.write(buf)) return cb();
    this.waiting = cb;
    input.once('drain', () => this.release());
  }

  private release(): void {
    const cb = this.waiting;
    this.waiting = null;
    cb?.();
  }

  private start(head: Buffer): PassThrough | null {
    let format: ArchiveFormat;
    try {
      format = sniffFormat(head.subarray(0, 512));
      if (format === 'zip') throw new ReleaseError('a zip archive is not unpacked while it downloads');
    } catch (err) {
      this.fail(err);
      return null;
    }
    const input = new PassThrough({ highWaterMark: STREAM_BATCH });
    // Its errors reach extractTar; one before extractTar listens must not go unhandled.
    input.on('error', () => {});
    this.input = input;
    const { opts } = this;
    const expected = opts.archiveBytes ?? 0;
    // Until the archive has ended its size is not known for sure: the ratio is checked against
    // the larger of the declared size and the bytes so far, and once more at the end.
    const guard = newGuard(opts, () => Math.max(expected, this.bytes));
    unpackInto(this.dest, format, opts.signal, guard, async (dest) => {
      await extractTar(input, format, dest, guard, opts.signal);
      guard.recheck(this.bytes);
    }).then(
      (root) => this.settle.resolve(root),
      (err) => {
        this.fail(err);
        this.settle.reject(err);
      },
    );
    return input;
  }

  private fail(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.batch = [];
    this.batchBytes = 0;
    // extractTar sees the input fail, stops, and unpackInto removes the directory before
    // `result` rejects; with no input, nothing was written yet.
    if (this.input && !this.input.destroyed) this.input.destroy(err instanceof Error ? err : new Error(String(err)));
    else if (!this.input) this.settle.reject(err);
    this.release();
  }
}

// node-tar has no "all settled" event after an abort and may still have mkdir/open
// calls in flight. Renaming first makes those fail (they use paths under dest)
// instead of recreating files while we delete.
async function discard(dest: string): Promise<void> {
  const trash = `${dest}.discard-${process.pid}-${Date.now()}`;
  try {
    await rename(dest, trash);
  } catch {
    await rm(dest, { recursive: true, force: true, maxRetries: 5 });
    return;
  }
  await rm(trash, { recursive: true, force: true, maxRetries: 5 });
}

async function appRoot(dest: string): Promise<string> {
  const top = await readdir(dest, { withFileTypes: true });
  // GitHub-style "repo-<sha>/..." archives: the app lives one level down.
  if (top.length === 1 && top[0].isDirectory()) return path.join(dest, top[0].name);
  return dest;
}

/**
 * Format-independent entry policy. Tracks the archive's own symlinks so that
 * link targets can be resolved the way the kernel will, whatever the entry order.
 */
class EntryGuard {
  entries = 0;
  bytes = 0;
  private readonly links = new Map<string, string>();

  constructor(
    readonly maxBytes: number,
    readonly maxEntries: number,
    readonly maxRatio: number,
    /** The archive's size; while it streams in, what it is expected to be (see StreamUnpack). */
    private readonly archiveSize: () => number,
  ) {}

  get archiveBytes(): number {
    return this.archiveSize();
  }

  /** The caps once more, now that the archive's real size is known (its end has been read). */
  recheck(archiveBytes: number): void {
    this.checkTotal(Math.max(this.bytes, this.streamed), archiveBytes);
  }

  countEntry(): void {
    if (++this.entries > this.maxEntries) throw new ReleaseError(`archive has more than ${this.maxEntries} entries`);
  }

  countBytes(n: number): void {
    this.checkBytes(n);
    this.bytes += n;
  }

  /** Every decompressed byte of a tar stream, whatever it is (headers, padding, trailing data). */
  private streamed = 0;

  countStream(n: number): void {
    this.streamed += n;
    this.checkTotal(this.streamed);
  }

  /** Throws if `n` more bytes would pass a cap (for sizes declared up front, before writing any). */
  checkBytes(n: number): void {
    this.checkTotal(this.bytes + n);
  }

  private checkTotal(total: number, archiveBytes = this.archiveBytes): void {
    if (total > this.maxBytes) throw new ReleaseError(`archive exceeds ${this.maxBytes} bytes uncompressed`);
    if (total > RATIO_FLOOR && total > this.maxRatio * archiveBytes) {
      throw new ReleaseError(
        `archive expands to more than ${this.maxRatio} times its size (${total} bytes from ${archiveBytes}): ` +
          'refusing a likely decompression bomb',
      );
    }
  }

  /** Validate an entry name; returns it normalized ("a/b", "" for the root). */
  entryPath(name: string): string {
    if (name.startsWith('/') || /^[a-zA-Z]:/.test(name)) {
      throw new ReleaseError(`archive entry "${name}" has an absolute path`);
    }
    const parts = name.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.includes('..')) throw new ReleaseError(`archive entry "${name}" escapes the release directory`);
    // Writing below one of our own symlinks would write wherever it points.
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      if (this.links.has(prefix)) throw new ReleaseError(`archive entry "${name}" is inside symlink "${prefix}"`);
    }
    return parts.join('/');
  }

  /** A plain file or directory at `rel` replaces any earlier symlink there; true if one was. */
  plain(rel: string): boolean {
    return this.links.delete(rel);
  }

  symlink(rel: string, target: string): void {
    if (resolve(this.links, parentParts(rel), target, { hops: 0 }) === null) {
      throw new ReleaseError(`archive symlink "${rel}" -> "${target}" escapes the release directory`);
    }
    this.links.set(rel, target);
  }

  /** Hard link targets are archive-relative paths to an earlier entry. */
  hardlink(rel: string, target: string): void {
    let t: string;
    try {
      t = this.entryPath(target);
    } catch {
      throw new ReleaseError(`archive hard link "${rel}" -> "${target}" escapes the release directory`);
    }
    // link(2) on a symlink copies the symlink, whose relative target would then resolve elsewhere.
    if (t === '' || this.links.has(t)) throw new ReleaseError(`archive hard link "${rel}" -> "${target}" is not allowed`);
    this.plain(rel);
  }

  /** Re-check every symlink against the final set: a later link can change what an earlier one resolves to. */
  checkLinks(): void {
    for (const [rel, target] of this.links) {
      if (resolve(this.links, parentParts(rel), target, { hops: 0 }) === null) {
        throw new ReleaseError(`archive symlink "${rel}" -> "${target}" escapes the release directory`);
      }
    }
  }
}

function parentParts(rel: string): string[] {
  return rel.split('/').slice(0, -1);
}

/** Resolve `target` from directory `base`, following archive symlinks; null if it leaves the root or loops. */
function resolve(links: Map<string, string>, base: string[], target: string, state: { hops: number }): string[] | null {
  if (target.startsWith('/')) return null;
  const cur = [...base];
  for (const comp of target.split('/')) {
    if (comp === '' || comp === '.') continue;
    if (comp === '..') {
      if (cur.length === 0) return null;
      cur.pop();
      continue;
    }
    cur.push(comp);
    const link = links.get(cur.join('/'));
    if (link === undefined) continue;
    if (++state.hops > MAX_SYMLINK_HOPS) return null;
    const resolved = resolve(links, cur.slice(0, -1), link, state);
    if (resolved === null) return null;
    cur.splice(0, cur.length, ...resolved);
  }
  return cur;
}

async function extractTar(source: Readable, format: ArchiveFormat, dest: string, guard: EntryGuard, signal?: AbortSignal): Promise<void> {
  if (source.destroyed) throw source.errored ?? new Error('the archive ended early');
  let failure: Error | undefined;
  const unpacker: Unpack = new Unpack({
    cwd: dest,
    // As root node-tar would chown to the archive's uids; files must belong to us.
    preserveOwner: false,
    // Directories the archive implies but does not list, and entries without a mode.
    dmode: 0o755,
    fmode: 0o644,
    filter: (_p, e) => {
      if (failure) return false;
      try {
        return admitTarEntry(e as ReadEntry, guard);
      } catch (err) {
        fail(err as Error);
        return false;
      }
    },
    onwarn: (code, message) => {
      // Informational (e.g. stripped "./") and skipped unsupported types are fine;
      // anything else means an entry was not written as the archive says.
      if (code === 'TAR_ENTRY_INFO' || code === 'TAR_ENTRY_UNSUPPORTED') return;
      fail(new ReleaseError(`cannot unpack archive: ${message}`));
    },
  });
  // abort() emits 'error' synchronously, so defer it out of node-tar's parse loop; and
  // it decorates the error it is given, so keep ours (maybe a DOMException) out of it.
  const fail = (err: Error): void => {
    if (failure) return;
    failure = err;
    queueMicrotask(() => unpacker.abort(new Error('unpack stopped')));
  };

  // Decompressed here, not by node-tar: its inflate runs synchronously over each chunk it is
  // given (a few KiB of gzip can hold the event loop for seconds), while zlib's streams work
  // off the main thread a bounded piece at a time. node-tar only ever sees plain tar.
  const inflate = format === 'tar.gz' ? createGunzip({ chunkSize: INFLATE_CHUNK }) : null;
  let eof = false;
  unpacker.on('eof', () => (eof = true));
  const meter = tarMeter(guard, () => eof);
  const stages: (Readable | Transform)[] = inflate ? [source, inflate, meter] : [source, meter];
  await new Promise<void>((resolve, reject) => {
    const stop = (): void => {
      for (const s of stages) s.destroy();
    };
    const onAbort = (): void => {
      stop();
      fail(abortReason(signal!) as Error);
    };
    const done = (err?: Error): void => {
      signal?.removeEventListener('abort', onAbort);
      if (err || failure) {
        stop();
        reject(failure ?? err);
      } else resolve();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    unpacker.on('error', (err: Error) => done(err));
    unpacker.on('close', () => done());
    for (const s of stages) s.on('error', (err: Error) => fail(err));
    for (let i = 0; i + 1 < stages.length; i++) stages[i].pipe(stages[i + 1] as Transform);
    meter.pipe(unpacker);
  });
}

/** Bytes after the end-of-archive marker that are still accepted (tar pads to 10 KiB records; some tools to more). */
export const TRAILING_ALLOWANCE = 1024 * 1024;

/**
 * Between the decompressor and node-tar: counts every decompressed byte against the caps
 * (headers, padding and trailing data included, not only entry bodies), makes sure what is
 * inside the gzip is a tar (so node-tar never inflates anything itself), and once node-tar
 * has seen the end-of-archive marker stops passing data on: past TRAILING_ALLOWANCE more the
 * archive is refused.
 */
function tarMeter(guard: EntryGuard, sawEof: () => boolean): Transform {
  let head: Buffer | null = Buffer.alloc(0);
  let trailing = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      try {
        guard.countStream(chunk.length);
        if (sawEof()) {
          trailing += chunk.length;
          if (trailing > TRAILING_ALLOWANCE)
            throw new ReleaseError(`archive has more than ${TRAILING_ALLOWANCE} bytes of data after its end-of-archive marker`);
          return cb();
        }
        if (head) {
          head = Buffer.concat([head, chunk]);
          if (head.length < 512) return cb();
          if (!isTarHeader(head.subarray(0, 512))) throw new Error('the compressed data is not a tar archive');
          const all = head;
          head = null;
          return cb(null, all);
        }
        cb(null, chunk);
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb) {
      // Less than one block in all: no tar (and never handed to node-tar, which would inflate it).
      cb(head && head.length > 0 ? new Error('the compressed data is not a tar archive') : null);
    },
  });
}

/** A ustar header, or a pre-POSIX one whose checksum adds up; a zero block is the (empty) end marker. */
function isTarHeader(block: Buffer): boolean {
  return block.toString('latin1', 257, 262) === 'ustar' || v7ChecksumOk(block) || block.every((b) => b === 0);
}

/** filter() for node-tar: throw to reject the archive, false to skip an entry. */
function admitTarEntry(entry: ReadEntry, guard: EntryGuard): boolean {
  guard.countEntry();
  guard.countBytes(entry.size);
  const rel = guard.entryPath(entry.path);
  // Permission bits only: no setuid/setgid/sticky, no group/world write from an untrusted archive.
  if (typeof entry.mode === 'number') entry.mode &= MODE_MASK;
  switch (entry.type) {
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
    case 'Directory':
    case 'GNUDumpDir':
      guard.plain(rel);
      return true;
    case 'SymbolicLink':
      guard.symlink(rel, entry.linkpath ?? '');
      return true;
    case 'Link':
      guard.hardlink(rel, entry.linkpath ?? '');
      return true;
    default:
      return false; // devices, FIFOs and vendor extensions are never extracted
  }
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

async function extractZip(file: string, dest: string, guard: EntryGuard, signal?: AbortSignal): Promise<void> {
  const { default: yauzl } = await import('yauzl'); // zip releases are the rare case
  const zip = await yauzl.openPromise(file, { lazyEntries: true, autoClose: true, validateEntrySizes: true });
  try {
    if (zip.entryCount > guard.maxEntries) throw new ReleaseError(`archive has more than ${guard.maxEntries} entries`);
    for await (const entry of zip.eachEntry()) {
      signal?.throwIfAborted();
      guard.countEntry();
      const rel = guard.entryPath(entry.fileName);
      const abs = path.join(dest, rel);
      // Unix "made by" zips carry st_mode in the high 16 bits; others get defaults.
      const unixMode = entry.versionMadeBy >> 8 === 3 ? entry.externalFileAttributes >>> 16 : 0;
      const type = unixMode & S_IFMT;
      if (entry.fileName.endsWith('/') || type === S_IFDIR) {
        // Replace an earlier symlink rather than mkdir through it.
        if (guard.plain(rel)) await rm(abs, { force: true });
        await mkdir(abs, { recursive: true, mode: 0o755 });
      } else if (type === S_IFLNK) {
        const target = await readLinkTarget(zip, entry, guard, signal);
        guard.symlink(rel, target);
        await mkdir(path.dirname(abs), { recursive: true, mode: 0o755 });
        await symlink(target, abs);
      } else if (type === 0 || type === S_IFREG) {
        // Replace an earlier symlink rather than write through it.
        if (guard.plain(rel)) await rm(abs, { force: true });
        await mkdir(path.dirname(abs), { recursive: true, mode: 0o755 });
        const mode = unixMode & MODE_MASK || 0o644;
        // Sizes are validated against the data (validateEntrySizes): refuse before writing a byte.
        guard.checkBytes(entry.uncompressedSize);
        const body = await zip.openReadStreamPromise(entry);
        await pipeline(body, byteCounter(guard), createWriteStream(abs, { mode }), { signal });
      }
      // other types (devices, FIFOs, sockets) are skipped
    }
  } catch (err) {
    throw zipError(err);
  } finally {
    if (zip.isOpen) zip.close();
  }
}

// yauzl validates names itself; reword its errors to match the tar path's.
function zipError(err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof ReleaseError) return err;
  const m = /^(?:absolute path|invalid relative path): (.*)$/s.exec(err.message);
  if (m) return new ReleaseError(`archive entry "${m[1]}" escapes the release directory`);
  if (/^entry is encrypted/.test(err.message)) return new ReleaseError('archive has encrypted entries; encrypted zips are not supported');
  return err;
}

async function readLinkTarget(zip: ZipFile, entry: Entry, guard: EntryGuard, signal?: AbortSignal): Promise<string> {
  if (entry.uncompressedSize > MAX_LINK_TARGET) throw new ReleaseError(`archive symlink "${entry.fileName}" has an oversized target`);
  const body: Readable = await zip.openReadStreamPromise(entry);
  const chunks: Buffer[] = [];
  await pipeline(
    body,
    byteCounter(guard),
    async function* (source: AsyncIterable<Buffer>) {
      for await (const c of source) chunks.push(c);
    },
    { signal },
  );
  return Buffer.concat(chunks).toString('utf8');
}

/** Counts actually decompressed bytes against the cap (never trusting headers). */
function byteCounter(guard: EntryGuard): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      try {
        guard.countBytes(chunk.length);
        cb(null, chunk);
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}
