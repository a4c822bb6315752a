/** Polls `check` every `intervalMs` until it returns a truthy value; throws after `timeoutMs`. */
export async function until<T>(check: () => T | Promise<T>, what: string, timeoutMs: number, intervalMs = 10): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
