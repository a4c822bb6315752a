// Turns what the user names as an app's source (a local directory or a URL) into the
// source_url the agent downloads: a directory is packed and uploaded to the agent's blob
// store (the index's `data` link), and its blob URL is the source.
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { readProcfile as readProcfileSafely, type Procfile } from '../release/launch.js';
import { describeTypes } from '../release/procfile.js';
import { CliError, EXIT, linkOf, type Client, type Doc } from './client.js';
import { bytes, type Out } from './format.js';
import { packDirectory, type Packed } from './pack.js';

export function isUrl(source: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(source);
}

/** A directory's Procfile, checked before anything is packed or sent (read as the agent reads it). */
export async function readProcfile(dir: string): Promise<Procfile> {
  let st;
  try {
    st = await stat(dir);
  } catch {
    throw new CliError(`${dir}: no such directory`, EXIT.usage);
  }
  if (!st.isDirectory()) throw new CliError(`${dir}: not a directory`, EXIT.usage);
  let procfile: Procfile | null;
  try {
    procfile = await readProcfileSafely(dir);
  } catch (err) {
    throw new CliError(`${path.join(dir, 'Procfile')}: ${(err as Error).message}`, EXIT.usage);
  }
  if (!procfile)
    throw new CliError(
      `${dir} has no Procfile (a line per process type, e.g. "web: node server.js") nor a package.json with a "start" script`,
      EXIT.usage,
    );
  return procfile;
}

export function checkTypes(dir: string, procfile: Procfile, types: string[]): void {
  // Without a Procfile, package.json's start script is the one type: web.
  const where = fromPackageJson(procfile)
    ? `${dir} has no Procfile, so only "web: npm start" (package.json) runs; it`
    : path.join(dir, 'Procfile');
  for (const type of types) {
    if (!procfile.has(type)) throw new CliError(`${where} has no process type "${type}" (it has: ${describeTypes(procfile)})`, EXIT.usage);
  }
}

/** Whether the process types come from package.json (no Procfile): `web: npm start`. */
export function fromPackageJson(procfile: Procfile): boolean {
  return [...procfile.values()].some((e) => e.from === 'package.json');
}

export interface SourceOptions {
  /** Only find out what the source URL would be: never upload (apply --dry-run). */
  dryRun?: boolean;
  /** Where progress goes (a bar when it is a TTY and the upload is large). */
  progress?: Out;
}

export interface ResolvedSource {
  /** The URL to create processes from; null in a dry run when the agent does not hold the bytes yet. */
  url: string | null;
  packed?: Packed;
  reused?: boolean;
}

export async function resolveSource(client: Client, source: string, opts: SourceOptions = {}): Promise<ResolvedSource> {
  if (isUrl(source)) return { url: source };
  const tmp = await mkdtemp(path.join(tmpdir(), 'drover-pack-'));
  try {
    const packed = await packDirectory(source, path.join(tmp, 'app.tar.gz'));
    const dataUrl = await client.link('data', 'a data store to upload the app to');
    if (opts.dryRun) {
      // Content-addressed: if the agent already holds these bytes, the listing links to them.
      const listing = await client.json('GET', dataUrl);
      const held = (listing.data as Doc[] | undefined)?.find((d) => d.id === packed.sha256);
      return { url: held ? linkOf(held, 'blob', 'blob downloads') : null, packed };
    }
    const doc = await upload(client, dataUrl, packed, opts.progress);
    if (doc.id !== packed.sha256)
      throw new CliError(`the agent stored the upload under ${doc.id}, but its sha256 is ${packed.sha256}: corrupted in transit?`);
    return { url: linkOf(doc, 'blob', 'blob downloads'), packed, reused: doc.reused === true };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

const BAR_THRESHOLD = 1024 * 1024;

async function upload(client: Client, dataUrl: string, packed: Packed, progress?: Out): Promise<Doc> {
  const bar = progress?.isTTY && packed.size >= BAR_THRESHOLD ? progressBar(progress, packed.size) : null;
  let sent = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      sent += chunk.length;
      bar?.update(sent);
      cb(null, chunk);
    },
  });
  const body = createReadStream(packed.file).pipe(meter);
  try {
    return await client.json('POST', dataUrl, {
      raw: Readable.toWeb(body) as ReadableStream,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(packed.size) },
    });
  } finally {
    bar?.done();
  }
}

function progressBar(out: Out, total: number) {
  let last = 0;
  const draw = (n: number) => {
    const width = 30;
    const filled = Math.round((n / total) * width);
    out.write(
      `\ruploading ${bytes(n)} / ${bytes(total)} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${Math.floor((n / total) * 100)}%`,
    );
  };
  return {
    update(n: number) {
      const now = Date.now();
      if (now - last < 100 && n < total) return;
      last = now;
      draw(n);
    },
    done() {
      out.write('\n');
    },
  };
}
