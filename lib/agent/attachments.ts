// Files sent with a form callback (multipart/form-data). A delivery names its sources; right
// after it is added they are taken into the outbox's own directory (a hard link, a copy across
// file systems, or a zip of a directory), so a run finalised before the POST, or an agent
// restart, still sends them. The body is built with the platform's FormData and Blob.
import { createHash } from 'node:crypto';
import { createWriteStream, openAsBlob } from 'node:fs';
import { copyFile, link, lstat, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { Attachment, Delivery } from '../store/outbox.js';

const READY = 'ready';

/** Where a delivery's taken files live. */
export function attachmentDir(root: string, id: string): string {
  return join(root, createHash('sha256').update(id).digest('hex').slice(0, 32));
}

/** Takes the delivery's sources into `dir` once (a marker says it is done); a missing source is left out. */
export async function takeAttachments(dir: string, list: readonly Attachment[]): Promise<void> {
  if (await exists(join(dir, READY))) return;
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  for (const [i, a] of list.entries()) {
    const dest = join(dir, String(i));
    try {
      const st = await stat(a.path);
      if (st.isDirectory()) await zipDirectory(a.path, dest);
      else if (st.isFile()) await link(a.path, dest).catch(() => copyFile(a.path, dest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  await writeFile(join(dir, READY), '');
}

/** A zip of everything under `dir` (regular files; links and devices left out), written to `dest`. */
export async function zipDirectory(dir: string, dest: string): Promise<void> {
  const { default: yazl } = await import('yazl'); // only experiments zip their results
  const zip = new yazl.ZipFile();
  const walk = async (at: string): Promise<void> => {
    for (const name of (await readdir(at)).sort()) {
      const p = join(at, name);
      const st = await lstat(p);
      if (st.isDirectory()) await walk(p);
      else if (st.isFile()) zip.addFile(p, relative(dir, p));
    }
  };
  await walk(dir);
  zip.end();
  const tmp = `${dest}.tmp`;
  await pipeline(zip.outputStream as Readable, createWriteStream(tmp));
  await rename(tmp, dest);
}

/** The multipart body of a form delivery with its taken files: bytes and content type (with the boundary). */
export async function multipartBody(d: Delivery, dir: string): Promise<{ body: Uint8Array; type: string }> {
  const form = new FormData();
  for (const [k, v] of Object.entries(d.fields))
    if (v !== undefined && v !== null) form.append(k, typeof v === 'string' ? v : JSON.stringify(v));
  for (const [i, a] of (d.attach ?? []).entries()) {
    const file = join(dir, String(i));
    if (!(await exists(file))) continue;
    form.append(a.field, await openAsBlob(file, { type: a.type ?? 'application/octet-stream' }), a.filename);
  }
  // Serialised once, so the HMAC covers exactly the bytes sent.
  const req = new Request('http://localhost/', { method: 'POST', body: form });
  return { body: new Uint8Array(await req.arrayBuffer()), type: req.headers.get('content-type')! };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
