// Procs (Procstar's API, POST /procs): processes created from an explicit spec instead of a
// Procfile entry. Each is an ordinary process actor of the supervisor (restart policy never);
// this is what it has besides: the errors that kept it from starting, its captured output,
// and its end as kept across agent restarts.
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExitInfo } from '../os/child.js';
import { MemoryCaptures, type FdEntry } from '../os/fds.js';
import type { ProcRecord } from '../store/desired.js';

const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

/**
 * A file- and slug-safe key for a client's proc id: the id itself when it is plain, else
 * `~` and a hash (no plain id starts with `~`, so the two never meet).
 */
export function procKey(id: string): string {
  if (SAFE_ID.test(id) && !id.includes('..')) return id;
  return `~${createHash('sha256').update(id).digest('hex').slice(0, 40)}`;
}

/** The slug of a proc: `proc:` and its key, never the slug of an app's process (APP.NODE). */
export function procSlug(id: string): string {
  return `proc:${procKey(id)}`;
}

export class ProcRuntime {
  /** Why it could not run as asked (bad exe, fd setup, capture cap): any makes its state `error`. */
  readonly errors: string[] = [];
  readonly captures: MemoryCaptures;
  /** The app's pid, kept after it ended. */
  pid: number | null = null;
  startedAt: number | null = null;
  /** How it ended, also after an agent restart (from the record). */
  exit: ExitInfo | null = null;
  /** Brought back by an agent restart: it is over, whatever the actor says for a moment. */
  restored = false;
  /** Memory captures a previous agent saved to disk at the end, bytes by fd. */
  private saved = new Map<number, number>();

  constructor(
    readonly id: string,
    /** STATE_DIR/procs/KEY: its tempfile captures and saved memory captures. */
    readonly dir: string,
    readonly fds: readonly FdEntry[],
    maxCaptureBytes: number,
  ) {
    this.captures = new MemoryCaptures(maxCaptureBytes);
  }

  /** Picks up what a previous agent saved of it. */
  restoreFrom(record: ProcRecord): void {
    const f = record.final;
    if (!f) return;
    this.errors.push(...f.errors);
    this.pid = f.pid;
    this.startedAt = f.startedAt;
    this.exit = f.exit as ExitInfo;
    this.saved = new Map(Object.entries(f.saved).map(([fd, n]) => [Number(fd), n]));
  }

  /** Creates its directory (once, before its first tempfile). */
  ensureDir(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  tempfile(fd: number): string {
    return join(this.dir, `fd-${fd}`);
  }

  private savedFile(fd: number): string {
    return join(this.dir, `memory-${fd}`);
  }

  entry(fd: number): FdEntry | undefined {
    return this.fds.find((e) => e.fd === fd);
  }

  /** Captured bytes of `fd` (memory, saved, or tempfile); null when the fd is not captured. */
  async output(fd: number): Promise<Buffer | null> {
    const spec = this.entry(fd)?.spec;
    if (spec?.type !== 'capture') return null;
    if (spec.mode === 'tempfile') return readFile(this.tempfile(fd)).catch(() => Buffer.alloc(0));
    if (this.saved.has(fd) && this.captures.length(fd) === 0) return readFile(this.savedFile(fd)).catch(() => Buffer.alloc(0));
    return this.captures.bytes(fd);
  }

  /** Length in bytes of what `fd` captured, without reading it all when it is on disk. */
  async outputLength(fd: number): Promise<number> {
    const spec = this.entry(fd)?.spec;
    if (spec?.type !== 'capture') return 0;
    if (spec.mode === 'memory') return this.captures.length(fd) || (this.saved.get(fd) ?? 0);
    return (await this.output(fd))?.length ?? 0;
  }

  /** Notes a memory cap that was hit, once per fd, as an error. */
  noteDropped(capName: string): void {
    for (const [fd, n] of this.captures.dropped)
      this.errors.push(`capture of fd ${fd} exceeded ${this.captures.maxBytes} bytes (${capName}); ${n} bytes were dropped`);
  }

  /** Writes its memory captures beside its tempfiles and returns what the record keeps of its end. */
  async saveFinal(): Promise<NonNullable<ProcRecord['final']>> {
    const saved: Record<string, number> = {};
    for (const e of this.fds) {
      if (e.spec.type !== 'capture' || e.spec.mode !== 'memory') continue;
      const bytes = this.captures.bytes(e.fd);
      this.ensureDir();
      await writeFile(this.savedFile(e.fd), bytes, { mode: 0o600 });
      saved[e.fd] = bytes.length;
    }
    return { errors: [...this.errors], pid: this.pid, startedAt: this.startedAt, exit: this.exit, saved };
  }

  /** Removes its files (on delete). */
  async removeFiles(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
