import { createHash } from 'node:crypto';

// Digests let a client tell whether a process was created from the same source and env as
// it wants now, without the agent echoing values (env values often hold secrets). Shared by
// the agent's status document and the CLI's deploy/apply plans, so both compute them alike.

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

export function sourceDigest(sourceUrl: string): string {
  return sha256(sourceUrl);
}

export function envDigest(env: Record<string, string>): string {
  return sha256(JSON.stringify(Object.entries(env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))));
}
