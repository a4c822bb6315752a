// Reading a small text file from an unpacked app (Procfile, .env) as the agent, which may be
// root while the app's own processes are not: no following symlinks the app planted, no
// hanging on a FIFO, no reading a huge file into memory.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

/** The file's bytes, or null if it does not exist. Errors are prefixed with `label`. */
export async function readSmallFile(file: string, maxBytes: number, label: string): Promise<Buffer | null> {
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
