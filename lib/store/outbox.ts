// The callbacks' durable outbox: one NDJSON file, appended and fsync'ed before a delivery counts
// as emitted, so a kill -9 between an event and its POST still delivers it after a restart.
// Lines are {"add": delivery} or {"done": id}; a delivery without its done is still owed.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** What a run or a process asked for: `callback` of a start or a create. */
export interface CallbackSpec {
  url: string;
  signature?: string;
  /** The event kinds posted; default: every kind of its owner (see agent/callbacks.ts). */
  events?: string[];
  format?: 'json' | 'form';
  /** The experiment runner's callbacks (POST /experiments): its returntypes and an output zip. */
  profile?: 'experiment';
}

/** A file sent with a form delivery (multipart), taken into the outbox's directory when the delivery is added. */
export interface Attachment {
  /** The form field. */
  field: string;
  /** Where it is taken from: a file, or a directory (sent as a zip). */
  path: string;
  filename: string;
  type?: string;
}

export interface Delivery {
  /** The idempotency key (X-Drover-Delivery). */
  id: string;
  /** Deliveries of one key go in order. */
  key: string;
  url: string;
  format: 'json' | 'form';
  fields: Record<string, unknown>;
  /** A give-up notice has no give-up of its own. */
  giveUp?: boolean;
  /** Files sent with it (form format only: the body is then multipart/form-data). */
  attach?: Attachment[];
  /** Set for a process's deliveries: the slug whose event log notes the attempts (else `key` is a run id). */
  process?: string;
}

export class Outbox {
  private fd: number;
  private closed = false;
  private readonly owed = new Map<string, Delivery>();

  constructor(readonly file: string) {
    mkdirSync(dirname(file), { recursive: true });
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      // a first start
    }
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const e = JSON.parse(line) as { add?: Delivery; done?: string };
        if (e.add) this.owed.set(e.add.id, e.add);
        else if (e.done) this.owed.delete(e.done);
      } catch {
        // a torn last line from a crash: that add never counted
      }
    }
    // Compacted to what is still owed, then appended to.
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, [...this.owed.values()].map((d) => JSON.stringify({ add: d }) + '\n').join(''));
    renameSync(tmp, file);
    this.fd = openSync(file, 'a');
  }

  /** Deliveries owed, in the order they were added. */
  pending(): Delivery[] {
    return [...this.owed.values()];
  }

  /** Durable once this returns. */
  add(d: Delivery): void {
    this.write({ add: d });
    this.owed.set(d.id, d);
  }

  done(id: string): void {
    if (!this.owed.delete(id)) return;
    this.write({ done: id });
  }

  private write(e: unknown): void {
    // After close the fd number may belong to another file: what is owed stays owed.
    if (this.closed) throw new Error('the outbox is closed');
    writeSync(this.fd, JSON.stringify(e) + '\n');
    fsyncSync(this.fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}
