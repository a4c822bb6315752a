// Builds a child process's environment. Layers, lowest to highest precedence:
//   1. the agent's own environment, minus every DROVER_* variable (drover's
//      settings and secrets must not leak into apps),
//   2. the app's .env file,
//   3. the Procfile entry's inline NAME=value assignments,
//   4. the start request's env,
//   5. PORT and the identity variables DYNO, DROVER_APP, DROVER_SLUG and
//      DROVER_PROCESS_TYPE (added after filtering; they are not secrets).
import { join } from 'node:path';
import { parse } from 'dotenv';
import { envStringProblem } from '../os/exec-limits.js';
import { readSmallFile } from './small-file.js';

export const DEFAULT_DOTENV_MAX_BYTES = 256 * 1024;

export interface EnvLayers {
  agent: Record<string, string>;
  dotenv: Record<string, string>;
  procfile: Record<string, string>;
  request: Record<string, string>;
  port: number;
  identity: { app: string; node: string; slug: string; processType: string };
}

// Case-insensitive, so "drover_token" is dropped too: better to over-filter a secret.
const isDroverVar = (name: string) => name.toUpperCase().startsWith('DROVER_');

/** A copy of env without undefined values and without DROVER_* variables. */
export function agentEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: [string, string][] = [];
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && !isDroverVar(name)) out.push([name, value]);
  }
  return Object.fromEntries(out);
}

/**
 * Reads and parses appDir/.env. A missing file is {}. Errors (all prefixed
 * ".env: ") for a file over maxBytes, with NUL bytes, not valid UTF-8, not a
 * regular file, or a symlink: the agent may be able to read files the app
 * can't, so it won't follow a link to them.
 */
export async function readDotenv(appDir: string, opts: { maxBytes?: number } = {}): Promise<Record<string, string>> {
  const buf = await readSmallFile(join(appDir, '.env'), opts.maxBytes ?? DEFAULT_DOTENV_MAX_BYTES, '.env');
  if (buf === null) return {};
  if (buf.includes(0)) throw new Error('.env: contains NUL bytes; it must be a text file');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new Error('.env: not valid UTF-8');
  }
  return parse(text); // parse never logs; config() would print unless quiet
}

/** Merges the layers (later wins) into one environment for spawn(). */
export function childEnv(layers: EnvLayers): Record<string, string> {
  const { port, identity } = layers;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid PORT ${port}`);
  // A Map, so a name like __proto__ can't reach Object.prototype's setter.
  const out = new Map<string, string>();
  const add = (layer: string, vars: Record<string, string>) => {
    for (const [name, value] of Object.entries(vars)) {
      // spawn() rejects NUL, and "=" in a name would be split into a different variable.
      if (name === '' || /[=\0]/.test(name)) throw new Error(`invalid variable name ${JSON.stringify(name)} in ${layer} env`);
      if (typeof value !== 'string' || value.includes('\0')) {
        throw new Error(`invalid value for ${name} in ${layer} env: must be a string without NUL`);
      }
      // The kernel's limit, checked here so the error names the variable and where it came from.
      const tooLong = envStringProblem(name, value);
      if (tooLong) throw new Error(`environment variable ${tooLong} (from the ${layer} env)`);
      out.set(name, value);
    }
  };
  add('agent', agentEnv(layers.agent)); // filtered again: callers may pass process.env as is
  add('.env', layers.dotenv);
  add('Procfile', layers.procfile);
  add('request', layers.request);
  add('identity', {
    PORT: String(port),
    DYNO: identity.node,
    DROVER_APP: identity.app,
    DROVER_SLUG: identity.slug,
    DROVER_PROCESS_TYPE: identity.processType,
  });
  return Object.fromEntries(out);
}
