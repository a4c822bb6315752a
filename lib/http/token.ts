// Where the agent's shared secret comes from: DROVER_TOKEN or a token file, never a flag
// (flags are visible to every user in `ps`).
import { open } from 'node:fs/promises';
import { constants } from 'node:fs';
import { ConfigError } from '../agent/config.js';

const MIN_LENGTH = 16;
const MAX_FILE_BYTES = 4096;
// It travels in an HTTP header: printable ASCII, no spaces.
const TOKEN_PATTERN = /^[\x21-\x7e]+$/;

export interface LoadedToken {
  token?: string;
  /** Things worth a warning on stderr (e.g. a token file others can read). */
  warnings: string[];
}

export function loadToken(tokenFile: string, env: NodeJS.ProcessEnv): Promise<LoadedToken> {
  return loadSecret(tokenFile, env, 'DROVER_TOKEN', '--token-file');
}

/** The read-only metrics token: DROVER_METRICS_TOKEN or --metrics-token-file, with the same rules. */
export function loadMetricsToken(tokenFile: string, env: NodeJS.ProcessEnv): Promise<LoadedToken> {
  return loadSecret(tokenFile, env, 'DROVER_METRICS_TOKEN', '--metrics-token-file');
}

/** The password of POST /experiments: DROVER_EXPERIMENTS_PASSWORD or --experiments-password-file, with the same rules. */
export function loadExperimentsPassword(file: string, env: NodeJS.ProcessEnv): Promise<LoadedToken> {
  return loadSecret(file, env, 'DROVER_EXPERIMENTS_PASSWORD', '--experiments-password-file');
}

async function loadSecret(tokenFile: string, env: NodeJS.ProcessEnv, envName: string, flag: string): Promise<LoadedToken> {
  const fromEnv = env[envName];
  if (fromEnv !== undefined && tokenFile) {
    throw new ConfigError(`both ${envName} and ${flag} are set; use one of them`);
  }
  if (fromEnv !== undefined) return { token: checked(fromEnv, envName), warnings: [] };
  if (!tokenFile) return { warnings: [] };

  const warnings: string[] = [];
  let text: string;
  try {
    const fh = await open(tokenFile, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new ConfigError(`token file ${tokenFile} is not a regular file`);
      if (st.size > MAX_FILE_BYTES)
        throw new ConfigError(`token file ${tokenFile} is larger than ${MAX_FILE_BYTES} bytes; it should hold only the token`);
      if (st.mode & 0o077) {
        warnings.push(
          `token file ${tokenFile} can be read by other users (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); chmod 600 it`,
        );
      }
      text = (await fh.readFile()).toString('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`cannot read token file ${tokenFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  // Editors and `echo` add a final newline; it is not part of the token.
  return { token: checked(text.replace(/\r?\n$/, ''), `token file ${tokenFile}`), warnings };
}

function checked(token: string, source: string): string {
  // Never quote the token in a message: these end up on stderr and in service logs.
  if (token === '') throw new ConfigError(`the token in ${source} is empty`);
  if (!TOKEN_PATTERN.test(token)) {
    throw new ConfigError(
      `the token in ${source} must be printable ASCII without spaces or line breaks (e.g. the output of "openssl rand -hex 32")`,
    );
  }
  if (token.length < MIN_LENGTH) {
    throw new ConfigError(`the token in ${source} is too short: use at least ${MIN_LENGTH} characters (e.g. "openssl rand -hex 32")`);
  }
  return token;
}
