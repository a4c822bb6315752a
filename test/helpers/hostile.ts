// Archives no sane packer would write, built byte by byte for the bad-input tests.
import { gzipSync } from 'node:zlib';
import { Header } from 'tar';
import yazl from 'yazl';

export interface TarEntry {
  path: string;
  type?:
    'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'CharacterDevice' | 'BlockDevice' | 'FIFO' | 'ExtendedHeader' | 'GlobalExtendedHeader';
  body?: string | Buffer;
  linkpath?: string;
  mode?: number;
  /** The size the header declares, when it should differ from the body's. */
  declaredSize?: number;
}

/** A tar built block by block with node-tar's Header; `end: false` leaves off the end-of-archive blocks. */
export function rawTar(entries: TarEntry[], opts: { end?: boolean } = {}): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const type = e.type ?? 'File';
    const h = new Header({
      path: e.path,
      type,
      linkpath: e.linkpath,
      mode: e.mode ?? (type === 'Directory' ? 0o755 : 0o644),
      size: e.declaredSize ?? body.length,
      mtime: new Date(1700000000000),
      uid: 1000,
      gid: 1000,
    });
    h.encode();
    blocks.push(h.block!, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  if (opts.end !== false) blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

export const tgz = (entries: TarEntry[]): Buffer => gzipSync(rawTar(entries));

/** A pax extended header whose records override the next entry's fields (e.g. its path). */
export function paxHeader(records: Record<string, string>): TarEntry {
  const body = Object.entries(records)
    .map(([k, v]) => {
      const rest = ` ${k}=${v}\n`;
      let len = rest.length + 1;
      while (String(len).length + rest.length !== len) len++;
      return `${len}${rest}`;
    })
    .join('');
  return { path: 'PaxHeader', type: 'ExtendedHeader', body };
}

export interface ZipItem {
  name: string;
  body?: string | Buffer;
  /** Full st_mode: 0o120777 makes a symlink whose target is the body. */
  mode?: number;
  dir?: boolean;
  /** Store without compression (for byte patching). */
  store?: boolean;
}

export function zipOf(items: ZipItem[]): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const it of items) {
    const opts = { ...(it.mode != null ? { mode: it.mode } : {}), ...(it.store ? { compress: false } : {}) };
    if (it.dir) zip.addEmptyDirectory(it.name, opts);
    else zip.addBuffer(Buffer.from(it.body ?? ''), it.name, opts);
  }
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c));
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
    zip.outputStream.on('error', reject);
  });
}

/** yazl refuses unsafe names: write a same-length placeholder, then patch it in both headers. */
export function renameInZip(zip: Buffer, from: string, to: string): Buffer {
  if (Buffer.byteLength(from) !== Buffer.byteLength(to)) throw new Error('names must have equal byte length');
  const out = Buffer.from(zip);
  let n = 0;
  for (let i = out.indexOf(from); i !== -1; i = out.indexOf(from, i + 1)) {
    Buffer.from(to).copy(out, i);
    n++;
  }
  if (n !== 2) throw new Error(`expected the name in the local and central headers, found ${n}`);
  return out;
}

/** Offset of the central directory header of the first entry. */
export function centralHeader(zip: Buffer): number {
  return zip.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
}
