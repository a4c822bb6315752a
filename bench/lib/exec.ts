import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Runs a command to completion; resolves with its stdout, rejects with its stderr in the message. */
export async function exec(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, {
      cwd: opts.cwd,
      env: opts.env,
      timeout: opts.timeoutMs ?? 120_000,
      maxBuffer: 256 * 1024 * 1024,
      encoding: 'utf8',
    });
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string; stdout?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message.split('\n')[0]}\n${(e.stderr || e.stdout || '').slice(-2000)}`);
  }
}

/** Whether `cmd` is on PATH. */
export async function have(cmd: string): Promise<boolean> {
  try {
    await execFileAsync('sh', ['-c', `command -v "$1"`, 'sh', cmd]);
    return true;
  } catch {
    return false;
  }
}
