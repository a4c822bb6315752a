// Reading a run's files for GET /runs/ID/files/PATH and /output: a path the client names must
// stay inside the run's app directory, whatever links the run left there, and name a regular
// file (or a directory, for a tar.gz of it). The run's code is not trusted: it may have made
// symlinks out, device nodes or FIFOs (a read would block), or swap things while we look.
import { constants } from 'node:fs';
import { open, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { join, sep } from 'node:path';

export class RunPathError extends Error {
  constructor(
    readonly status: 400 | 404,
    detail: string,
  ) {
    super(detail);
  }
}

/** Checks a client's relative path; returns its segments. Pure: refuses absolute paths, `..`, NUL, empty names. */
export function checkRunPath(path: string): string[] {
  if (path.includes('\0')) throw new RunPathError(400, 'path must not contain NUL');
  if (path.startsWith('/'))
    throw new RunPathError(400, `path must be relative to the run's directory, got ${JSON.stringify(path.slice(0, 200))}`);
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..')) throw new RunPathError(400, `path must not contain "..", got ${JSON.stringify(path.slice(0, 200))}`);
  return parts;
}

export interface OpenedRunPath {
  kind: 'file' | 'directory';
  /** The real path (inside the root). */
  path: string;
  /** Open for a file; the caller reads and closes it. */
  handle?: FileHandle;
  size: number;
}

/** Opens PATH under ROOT: a regular file (open) or a directory; anything else, or a way out, is refused. */
export async function openRunPath(root: string, path: string): Promise<OpenedRunPath> {
  const parts = checkRunPath(path);
  const realRoot = await realpath(root);
  let real: string;
  try {
    real = await realpath(join(realRoot, ...parts));
  } catch {
    throw new RunPathError(404, `no file ${JSON.stringify(path.slice(0, 200))} in the run's directory`);
  }
  const inside = (p: string) => p === realRoot || p.startsWith(realRoot + sep);
  if (!inside(real)) throw new RunPathError(400, `${JSON.stringify(path.slice(0, 200))} is a link out of the run's directory`);
  let handle: FileHandle;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: a link swapped in since realpath is refused.
    handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new RunPathError(404, `no file ${JSON.stringify(path.slice(0, 200))} in the run's directory`);
    throw new RunPathError(400, `${JSON.stringify(path.slice(0, 200))} cannot be read (${code ?? 'error'})`);
  }
  try {
    const st = await handle.stat();
    // What was opened, by its descriptor: still inside the root after any race.
    const opened = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => real);
    if (!inside(opened)) throw new RunPathError(400, `${JSON.stringify(path.slice(0, 200))} is a link out of the run's directory`);
    if (st.isDirectory()) {
      await handle.close();
      return { kind: 'directory', path: opened, size: 0 };
    }
    if (!st.isFile()) throw new RunPathError(400, `${JSON.stringify(path.slice(0, 200))} is not a regular file (a device, FIFO or socket)`);
    return { kind: 'file', path: opened, handle, size: st.size };
  } catch (err) {
    await handle.close().catch(() => {});
    throw err;
  }
}
