import t from 'tap';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { readDotenv } from '../../lib/release/env.js';

// The rest of the env tests need no process: test/unit/env.test.ts. This one runs mkfifo.

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

t.test('readDotenv rejects a FIFO at once', async (t) => {
  const dir = t.testdir({ fifo: {} });
  // A FIFO must fail fast, not block the agent waiting for a writer.
  try {
    execFileSync('mkfifo', [join(dir, 'fifo', '.env')]);
  } catch {
    t.comment('mkfifo unavailable; FIFO case skipped');
    return;
  }
  t.match((await rejection(readDotenv(join(dir, 'fifo')))).message, /^\.env: not a regular file/);
});
