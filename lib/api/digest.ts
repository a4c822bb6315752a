import { createHash } from 'node:crypto';

// Digests let a client tell whether a process was created from the same source and env as
// it wants now, without the agent echoing values (env values often hold secrets). Shared by
// the agent's status document and the CLI's deploy/apply plans, so both compute them alike.

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

// A listing of 1000 processes asks for 2000 digests of mostly the same few values: each is
// remembered by its input (a URL; the env's canonical JSON, or the env object itself as long
// as its JSON is unchanged).
const bySource = new Map<string, string>();
const byEnv = new WeakMap<object, { json: string; digest: string }>();
const MAX_REMEMBERED = 1024;

export function sourceDigest(sourceUrl: string): string {
  let d = bySource.get(sourceUrl);
  if (d === undefined) {
    if (bySource.size >= MAX_REMEMBERED) bySource.clear();
    bySource.set(sourceUrl, (d = sha256(sourceUrl)));
  }
  return d;
}

export function envDigest(env: Record<string, string>): string {
  const json = JSON.stringify(Object.entries(env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const known = byEnv.get(env);
  if (known?.json === json) return known.digest;
  const digest = sha256(json);
  byEnv.set(env, { json, digest });
  return digest;
}
