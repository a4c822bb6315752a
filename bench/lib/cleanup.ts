/**
 * Things to undo if the bench is interrupted or fails: agents and peers it started, temp dirs.
 * Each scenario registers what it starts and unregisters it once it stopped it itself.
 */
const tasks = new Set<() => void>();

export function onCleanup(task: () => void): () => void {
  tasks.add(task);
  return () => tasks.delete(task);
}

export function runCleanup(): void {
  for (const t of [...tasks].reverse()) {
    tasks.delete(t);
    try {
      t();
    } catch {
      // best effort: keep undoing the rest
    }
  }
}
