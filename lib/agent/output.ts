export type LineStream = 'stdout' | 'stderr' | 'build';
export type LineListener = (stream: LineStream, line: string) => void;

/** Fans a process's output lines out to whoever is attached. Listeners must not block. */
export class OutputHub {
  private readonly listeners = new Set<LineListener>();
  private closers = new Set<() => void>();

  /** `record` sees every line before any listener (the event log, which numbers it); it is not one of them. */
  constructor(private readonly record?: LineListener) {}

  publish(stream: LineStream, line: string): void {
    this.record?.(stream, line);
    for (const l of this.listeners) l(stream, line);
  }

  /** Adds a listener; `onClose` runs when the process goes away. Returns the unsubscribe. */
  subscribe(listener: LineListener, onClose?: () => void): () => void {
    this.listeners.add(listener);
    if (onClose) this.closers.add(onClose);
    return () => {
      this.listeners.delete(listener);
      if (onClose) this.closers.delete(onClose);
    };
  }

  get size(): number {
    return this.listeners.size;
  }

  close(): void {
    const closers = this.closers;
    this.closers = new Set();
    this.listeners.clear();
    for (const c of closers) c();
  }
}
