// Packs a local app directory into a tar.gz for upload. What git would not commit is left
// out: .git, node_modules (the agent builds those), the agent's own .drover state, and
// whatever .gitignore files list (nested ones apply below their directory, as in git).
// The archive is reproducible: sorted entries, fixed mtimes, no owners, so the same tree
// gives the same bytes, hence the same blob id, and a redeploy of unchanged code is a no-op.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import ignore, { type Ignore } from 'ignore';
import { create as tarCreate } from 'tar';
import { hasStartScript } from '../release/package-json.js';
import { CliError, EXIT } from './client.js';

const ALWAYS_SKIPPED = new Set(['.git', 'node_modules', '.drover']);
const FIXED_MTIME = new Date('2000-01-01T00:00:00Z');

interface Rules {
  /** Directory the rules apply to, relative to the root ('' for the root). */
  base: string;
  ig: Ignore;
}

function isIgnored(rel: string, isDir: boolean, rules: Rules[]): boolean {
  // Deeper .gitignore files override shallower ones, as in git: the last decisive rule wins.
  let ignored = false;
  for (const { base, ig } of rules) {
    const sub = base === '' ? rel : rel.slice(base.length + 1);
    const r = ig.test(isDir ? `${sub}/` : sub);
    if (r.ignored) ignored = true;
    else if (r.unignored) ignored = false;
  }
  return ignored;
}

export interface Entry {
  path: string;
  dir: boolean;
}

/** What goes into the archive: relative paths, sorted, each directory before its contents. */
export async function listEntries(root: string): Promise<Entry[]> {
  const out: Entry[] = [];
  const walk = async (rel: string, rules: Rules[]): Promise<void> => {
    const abs = path.join(root, rel);
    let here = rules;
    try {
      const text = await readFile(path.join(abs, '.gitignore'), 'utf8');
      here = [...rules, { base: rel, ig: ignore().add(text) }];
    } catch {
      // no .gitignore here
    }
    const names = (await readdir(abs)).sort();
    for (const name of names) {
      if (ALWAYS_SKIPPED.has(name)) continue;
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(path.join(root, childRel));
      const isDir = st.isDirectory();
      if (!isDir && !st.isFile() && !st.isSymbolicLink()) continue; // sockets, FIFOs, devices
      if (isIgnored(childRel, isDir, here)) continue;
      out.push({ path: childRel, dir: isDir });
      if (isDir) await walk(childRel, here);
    }
  };
  await walk('', []);
  return out;
}

export interface Packed {
  file: string;
  files: number;
  size: number;
  sha256: string;
}

/** Writes `dir` as a reproducible tar.gz to `outFile`. */
export async function packDirectory(dir: string, outFile: string): Promise<Packed> {
  const entries = await listEntries(dir);
  // The agent needs a Procfile, or a package.json with a start script (web: npm start).
  if (!entries.some((e) => e.path === 'Procfile') && !(entries.some((e) => e.path === 'package.json') && (await hasStartScript(dir)))) {
    throw new CliError(
      `${path.join(dir, 'Procfile')} is missing or excluded by .gitignore (and package.json has no "start" script); the agent needs it`,
      EXIT.usage,
    );
  }
  await tarCreate(
    { gzip: true, file: outFile, cwd: dir, portable: true, mtime: FIXED_MTIME, noDirRecurse: true },
    entries.map((e) => e.path),
  );
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(outFile)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { file: outFile, files: entries.filter((e) => !e.dir).length, size, sha256: hash.digest('hex') };
}
