import { readFile } from 'node:fs/promises';

/**
 * Reads the log `once.sh` writes ("start NS" per run, "exit NS" before its first exit) and
 * returns the restart gap: first exit to the next start, in ms. Null until both are there.
 */
export async function restartGapMs(file: string): Promise<number | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return null;
  }
  const lines = text.split('\n').filter((l) => /^(start|exit) \d+$/.test(l));
  const starts = lines.filter((l) => l.startsWith('start '));
  const exit = lines.find((l) => l.startsWith('exit '));
  if (starts.length < 2 || !exit) return null;
  const ns = (l: string) => BigInt(l.split(' ')[1]);
  return Number(ns(starts[1]) - ns(exit)) / 1e6;
}
