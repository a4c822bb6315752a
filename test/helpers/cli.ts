import { spawn } from 'node:child_process';
import { bin } from './agent-process.js';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the compiled `drover` command as its own process against `url`. */
export function runCli(
  args: string[],
  opts: { url?: string; env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<CliResult> {
  const env: Record<string, string | undefined> = {
    ...process.env,
    NO_COLOR: undefined,
    FORCE_COLOR: undefined,
    DROVER_TOKEN: undefined,
    ...opts.env,
  };
  if (opts.url) env.DROVER_URL = opts.url;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: env as NodeJS.ProcessEnv,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}
