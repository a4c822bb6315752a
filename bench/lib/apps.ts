import { randomBytes } from 'node:crypto';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { create as tarCreate } from 'tar';

/**
 * The one small app every scenario but the 100 MB one runs, with a process type per scenario.
 * `once` logs (in ns) when each run starts and when its first run exits, crashes once, then
 * sleeps, so the gap between the two lines is the restart as the child itself sees it.
 * `lines` waits on a FIFO so the client is attached before the first line is written.
 */
const FILES: Record<string, string> = {
  Procfile: ['sleep: sleep 3600', 'crash: false', 'once: sh ./once.sh', 'lines: sh ./lines.sh', ''].join('\n'),
  'once.sh': [
    'mark="$MARKS/$DROVER_SLUG"',
    'echo "start $(date +%s%N)" >> "$mark"',
    'if [ -e "$mark.done" ]; then exec sleep 3600; fi',
    ': > "$mark.done"',
    'echo "exit $(date +%s%N)" >> "$mark"',
    'exit 1',
    '',
  ].join('\n'),
  'lines.sh': ['read -r _ < "$GATE"', 'exec seq "$LINES"', ''].join('\n'),
};

export interface BenchApp {
  /** The unpacked app (the bare-spawn baselines run its scripts from here). */
  dir: string;
  archive: string;
  url: string;
}

export async function writeBenchApp(workDir: string): Promise<BenchApp> {
  const dir = join(workDir, 'app');
  mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(FILES)) writeFileSync(join(dir, name), text);
  const archive = join(workDir, 'app.tar.gz');
  await tarCreate({ gzip: true, file: archive, cwd: dir, portable: true }, Object.keys(FILES));
  return { dir, archive, url: pathToFileURL(archive).href };
}

/**
 * An app of about `bytes` compressed: 1 MiB files, half random bytes (incompressible, like
 * images) and half base64 text (compresses to ~3/4, so gunzip has real work), in a few folders.
 */
export async function writeBigApp(workDir: string, bytes: number): Promise<{ archive: string; bytes: number; files: number }> {
  const dir = join(workDir, 'big-app');
  const MiB = 1024 * 1024;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Procfile'), 'web: sleep 3600\n');
  const names = ['Procfile'];
  let estimate = 0;
  for (let i = 0; estimate < bytes; i++) {
    const folder = `assets/${i % 8}`;
    mkdirSync(join(dir, folder), { recursive: true });
    const binary = i % 2 === 0;
    const name = `${folder}/${i}.${binary ? 'bin' : 'txt'}`;
    writeFileSync(join(dir, name), binary ? randomBytes(MiB) : randomBytes((MiB * 3) / 4).toString('base64'));
    names.push(name);
    estimate += binary ? MiB : MiB * 0.76;
  }
  const archive = join(workDir, 'big-app.tar.gz');
  await tarCreate({ gzip: true, file: archive, cwd: dir, portable: true }, names);
  return { archive, bytes: statSync(archive).size, files: names.length };
}
