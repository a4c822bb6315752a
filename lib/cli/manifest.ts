// The `drover apply` manifest: the apps an agent should run.
//
//   apps:
//     shop:
//       source: ./shop            # a directory (relative to this file) or a URL
//       processes: {web: 2, worker: 1}
//       env: {GREETING: hi}       # optional
//       env_file: shop.env        # optional, relative to this file; env wins
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { readEnvFile } from './args.js';
import { CliError, EXIT } from './client.js';
import { isUrl } from './source.js';

export interface ManifestApp {
  name: string;
  source: string;
  processes: Record<string, number>;
  env: Record<string, string>;
}

const APP = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const TYPE = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const APP_KEYS = new Set(['source', 'processes', 'env', 'env_file']);

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Parses and checks a manifest; every error names the file and the key at fault. */
export async function readManifest(file: string): Promise<ManifestApp[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read manifest ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, EXIT.usage);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new CliError(`${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`, EXIT.usage);
  }
  const bad = (where: string, what: string) => new CliError(`${file}: ${where}: ${what}`, EXIT.usage);
  // An empty file is more likely a mistake than a wish to delete everything: say so.
  if (doc == null) throw bad('top level', 'the manifest is empty (write "apps: {}" to delete every process)');
  if (!isMap(doc)) throw bad('top level', 'must be a mapping with an "apps" key');
  for (const k of Object.keys(doc)) if (k !== 'apps') throw bad(k, 'unknown key (expected "apps")');
  const apps = doc.apps ?? {};
  if (!isMap(apps)) throw bad('apps', 'must be a mapping of app names to apps');
  const dir = path.dirname(path.resolve(file));
  const out: ManifestApp[] = [];
  for (const [name, app] of Object.entries(apps)) {
    const at = `apps.${name}`;
    if (!APP.test(name) || name.includes('..')) throw bad(at, 'app names are 1-64 letters, digits, "_", "-" or "." (not first, no "..")');
    if (!isMap(app)) throw bad(at, 'must be a mapping with source and processes');
    for (const k of Object.keys(app)) if (!APP_KEYS.has(k)) throw bad(`${at}.${k}`, `unknown key (expected ${[...APP_KEYS].join(', ')})`);
    if (typeof app.source !== 'string' || app.source === '') throw bad(`${at}.source`, 'is required: a directory or a URL');
    const source = isUrl(app.source) ? app.source : path.resolve(dir, app.source);
    if (!isMap(app.processes)) throw bad(`${at}.processes`, 'is required: a mapping of process types to counts, e.g. {web: 1}');
    const processes: Record<string, number> = {};
    for (const [type, n] of Object.entries(app.processes)) {
      if (!TYPE.test(type)) throw bad(`${at}.processes.${type}`, 'is not a valid process type');
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 1000)
        throw bad(`${at}.processes.${type}`, `must be an integer from 0 to 1000, got ${JSON.stringify(n)}`);
      processes[type] = n;
    }
    let env: Record<string, string> = {};
    if (app.env_file !== undefined) {
      if (typeof app.env_file !== 'string') throw bad(`${at}.env_file`, 'must be a file name');
      env = await readEnvFile(path.resolve(dir, app.env_file));
    }
    if (app.env !== undefined && app.env !== null) {
      if (!isMap(app.env)) throw bad(`${at}.env`, 'must be a mapping of names to values');
      for (const [k, v] of Object.entries(app.env)) {
        if (!ENV_NAME.test(k)) throw bad(`${at}.env.${k}`, 'is not a valid environment variable name');
        if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean')
          throw bad(`${at}.env.${k}`, 'must be a string, number or boolean');
        env[k] = String(v);
      }
    }
    out.push({ name, source, processes, env });
  }
  return out;
}
