import { createServer, type Server } from 'node:http';
import { createReadStream, createWriteStream, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { create as tarCreate } from 'tar';
import yazl from 'yazl';
import yauzl from 'yauzl';

/** Packs `dir` into `file` as tar.gz, tar or zip. */
export async function pack(dir: string, file: string, format: 'tar.gz' | 'tar' | 'zip' = 'tar.gz'): Promise<string> {
  if (format === 'zip') {
    const zip = new yazl.ZipFile();
    const walk = (d: string) => {
      for (const name of readdirSync(d)) {
        const p = join(d, name);
        if (statSync(p).isDirectory()) walk(p);
        else zip.addFile(p, relative(dir, p), { mode: statSync(p).mode });
      }
    };
    walk(dir);
    zip.end();
    await new Promise<void>((resolve, reject) => zip.outputStream.pipe(createWriteStream(file)).on('close', resolve).on('error', reject));
  } else {
    await tarCreate({ gzip: format === 'tar.gz', file, cwd: dir, portable: true }, readdirSync(dir));
  }
  return file;
}

/** Writes a small app (files by relative path) into a new directory. */
export function writeApp(dir: string, files: Record<string, string>): string {
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), text, { mode: name.startsWith('bin/') ? 0o755 : 0o644 });
  }
  return dir;
}

/** A real HTTP server on loopback serving files by name, counting requests per path. */
export class ArchiveServer {
  readonly hits = new Map<string, number>();
  /** Every request's path and headers, in order. */
  readonly requests: { path: string; headers: Record<string, string | string[] | undefined> }[] = [];
  private readonly files = new Map<string, string>();
  private readonly redirects = new Map<string, string>();
  private server!: Server;
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const path = req.url ?? '/';
      this.hits.set(path, (this.hits.get(path) ?? 0) + 1);
      this.requests.push({ path, headers: { ...req.headers } });
      const to = this.redirects.get(path);
      if (to) {
        res.writeHead(302, { location: to });
        res.end();
        return;
      }
      const file = this.files.get(path);
      if (!file) {
        res.statusCode = 404;
        res.end('not found');
        return;
      }
      res.setHeader('content-length', statSync(file).size);
      createReadStream(file).pipe(res);
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
    return this;
  }

  /** Serves `file` at `/name` and returns its URL. */
  serve(name: string, file: string): string {
    this.files.set(`/${name}`, file);
    return `${this.url}/${name}`;
  }

  /** Answers `/name` with a 302 to `to`; returns its URL. */
  redirect(name: string, to: string): string {
    this.redirects.set(`/${name}`, to);
    return `${this.url}/${name}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** Every file in a zip with its text, by name. */
export function zipEntries(file: string): Promise<Record<string, string>> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true }, (err, zip) => {
      if (err || !zip) return reject(err);
      const out: Record<string, string> = {};
      zip.on('error', reject);
      zip.on('end', () => resolve(out));
      zip.on('entry', (entry: yauzl.Entry) => {
        if (entry.fileName.endsWith('/')) return zip.readEntry();
        zip.openReadStream(entry, (e, stream) => {
          if (e || !stream) return reject(e);
          const chunks: Buffer[] = [];
          stream.on('data', (c: Buffer) => chunks.push(c));
          stream.on('end', () => {
            out[entry.fileName] = Buffer.concat(chunks).toString();
            zip.readEntry();
          });
        });
      });
      zip.readEntry();
    });
  });
}
