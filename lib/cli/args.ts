import { readFile } from 'node:fs/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { parse as parseDotenv } from 'dotenv';
import { CliError, EXIT } from './client.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with a one-line usage error (exit 2); `--help`/`-h` is always accepted. */
export function parse<O extends Options>(argv: string[], options: O, verb: string) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: true });
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0];
    const unknown = /^Unknown option '([^']+)'/.exec(msg);
    throw new CliError(`${unknown ? `unknown option ${unknown[1]}` : msg} (see drover ${verb} --help)`, EXIT.usage);
  }
}

export function usageError(message: string, verb: string): CliError {
  return new CliError(`${message} (see drover ${verb} --help)`, EXIT.usage);
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const TYPE = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/;

/** `web=2,worker=1` (also given as several flags) → { web: 2, worker: 1 }. */
export function parseScale(specs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of specs
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean)) {
    const m = /^([^=]+)=(\d+)$/.exec(part);
    if (!m || !TYPE.test(m[1]))
      throw new CliError(`--scale: expected TYPE=COUNT (e.g. web=2,worker=1), got ${JSON.stringify(part)}`, EXIT.usage);
    const n = Number(m[2]);
    if (n > 1000) throw new CliError(`--scale: ${m[1]}=${n} is more than 1000 processes of one type`, EXIT.usage);
    out[m[1]] = n;
  }
  return out;
}

/** `K=V` flags → env; the value may contain "=". */
export function parseEnvPairs(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const name = eq === -1 ? pair : pair.slice(0, eq);
    if (eq === -1 || !ENV_NAME.test(name))
      throw new CliError(`--env: expected NAME=VALUE with a valid variable name, got ${JSON.stringify(pair.slice(0, 80))}`, EXIT.usage);
    env[name] = pair.slice(eq + 1);
  }
  return env;
}

const ENV_FILE_MAX = 256 * 1024;

/** A dotenv file, parsed like the agent parses an app's `.env`. */
export async function readEnvFile(file: string): Promise<Record<string, string>> {
  let text: Buffer;
  try {
    text = await readFile(file);
  } catch (err) {
    throw new CliError(`cannot read env file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, EXIT.usage);
  }
  if (text.length > ENV_FILE_MAX) throw new CliError(`env file ${file} is larger than ${ENV_FILE_MAX} bytes`, EXIT.usage);
  if (text.includes(0)) throw new CliError(`env file ${file} contains NUL bytes; it must be a text file`, EXIT.usage);
  return parseDotenv(text);
}
