// Reading a small text file from an unpacked app (Procfile, .env) as the agent, which may be
// root while the app's own processes are not: no following symlinks the app planted, no
// hanging on a FIFO, no reading a huge file into memory.
import { constants, lstatSync, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';

/**
 * Files read before, by path, with the identity they had. Every process created from one
 * release reads the same Procfile and .env (at check and at launch): a 1000-process fleet
 * would otherwise cost ~12,000 thread-pool round trips for three files that never change.
 */
const seen = new Map<string, { id: string; bytes: Buffer }>();
const MAX_SEEN = 512;

/** What tells one version of a file from another: a rewrite changes mtime or ctime, a replacement the inode. */
const identity = (st: Stats) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

/**
 * A file changed this recently is not remembered: file times can be as coarse as the kernel's
 * tick, so a same-size rewrite within it would keep the same identity ("racy git").
 */
const SETTLED_MS = 2000;

/** The file's bytes, or null if it does not exist. Errors are prefixed with `label`. */
export async function readSmallFile(file: string, maxBytes: number, label: string): Promise<Buffer | null> {
  // One lstat (microseconds, on the event loop) tells whether the copy read before still holds;
  // anything unusual (a link, a FIFO, a size over the cap) takes the careful path below.
  const st = lstatSync(file, { throwIfNoEntry: false });
  if (st === undefined) return null;
  const hit = seen.get(file);
  if (hit && st.isFile() && hit.id === identity(st) && hit.bytes.length <= maxBytes) return Buffer.from(hit.bytes);
  const bytes = await readCarefully(file, maxBytes, label);
  if (bytes && st.isFile()) {
    const after = lstatSync(file, { throwIfNoEntry: false });
    // Cached only when nothing changed while it was read.
    if (after && identity(after) === identity(st) && after.size === bytes.length && Date.now() - after.ctimeMs > SETTLED_MS) {
      if (seen.size >= MAX_SEEN) seen.delete(seen.keys().next().value!);
      seen.set(file, { id: identity(st), bytes: Buffer.from(bytes) });
    }
  }
  return bytes;
}

async function readCarefully(file: string, maxBytes: number, label: string): Promise<Buffer | null> {
  let fh;
  try {
    // O_NONBLOCK: opening a FIFO must not hang the agent.
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new Error(`${label}: is a symbolic link; refusing to follow it`);
    throw new Error(`${label}: cannot open: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error(`${label}: not a regular file`);
    if (st.size > maxBytes) throw tooLarge(label, maxBytes);
    // Read at most maxBytes + 1, so a file that grows after stat() still can't exceed the cap.
    const buf = Buffer.alloc(maxBytes + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > maxBytes) throw tooLarge(label, maxBytes);
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}

const tooLarge = (label: string, max: number) => new Error(`${label}: file is larger than the limit of ${max} bytes`);
