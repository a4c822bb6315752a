// Shared by the CLI's end-to-end files: an agent process for a test, and small readers of what the CLI prints.
import type { Test } from 'tap';
import { spawnAgent } from './agent-process.js';
import { runCli, type CliResult } from './cli.js';
import { waitFor } from './wait.js';

export async function agentFor(t: Test) {
  const agent = await spawnAgent(['--stop-grace-ms', '3000', '--backoff-initial-ms', '200']);
  t.teardown(async () => {
    agent.proc.kill('SIGINT');
    await agent.exit;
  });
  return agent;
}

export const ps = async (url: string) =>
  (JSON.parse((await runCli(['ps', '--json'], { url })).stdout) as any[]).sort((a, b) => (a.slug < b.slug ? -1 : 1));

/** What the app on `port` answers, once it listens (`running` means started, not yet listening). */
export const answer = (port: number) =>
  waitFor(async () => (await fetch(`http://127.0.0.1:${port}/`)).text(), `the app on port ${port} to answer`);

export function oneLineError(t: Test, r: CliResult, code: number, pattern: RegExp) {
  t.equal(r.code, code, `exit code ${code}`);
  t.equal(r.stderr.split('\n').filter(Boolean).length, 1, `one line: ${r.stderr.trim()}`);
  t.match(r.stderr, pattern);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
}
