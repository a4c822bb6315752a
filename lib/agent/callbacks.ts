// Callbacks of runs: each chosen event becomes a delivery in the durable outbox (store/outbox.ts),
// POSTed in order per run with an idempotency key and an HMAC, retried on connection errors,
// timeouts, 5xx, 408 and 429 with a settable backoff; after the last try one give-up notice in
// the same format, with its own tries. Every attempt is a `callback_attempt` event of the run.
import { createHmac } from 'node:crypto';
import { message } from '../process/wording.js';
import type { Delivery, Outbox } from '../store/outbox.js';
import type { Run, RunEventNotice, Runs } from './runs.js';

export const DEFAULT_CALLBACK_EVENTS = ['queued', 'running', 'finished', 'failed', 'cancelled'];

export interface CallbackOptions {
  secret: string;
  timeoutMs: number;
  backoffMs: number[];
  log: (line: string) => void;
}

/** Whether an answer (or a failure, status null) is worth another try. Pure. */
export function retryable(status: number | null): boolean {
  return status === null || status >= 500 || status === 408 || status === 429;
}

/** The body and content type of a delivery. Pure. */
export function encode(d: Delivery): { body: string; type: string } {
  if (d.format === 'form') {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(d.fields))
      if (v !== undefined && v !== null) p.append(k, typeof v === 'string' ? v : JSON.stringify(v));
    return { body: p.toString(), type: 'application/x-www-form-urlencoded' };
  }
  return { body: JSON.stringify(d.fields), type: 'application/json' };
}

/** `sha256=` HMAC of the body with the secret. Pure. */
export function sign(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** The callback kind of a run event, or null when it is none. */
export function kindOf(e: RunEventNotice, run: Run): string | null {
  if (e.type === 'queued') return 'queued';
  if (e.type === 'start' && e.data.stage === 'execute') return 'running';
  if (e.type === 'last') {
    if (run.cancelled) return 'cancelled';
    const x = run.exitData.execute;
    return x && x.exit_code === 0 ? 'finished' : 'failed';
  }
  return null;
}

export class Callbacks {
  private readonly chains = new Map<string, Promise<void>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly aborts = new Set<AbortController>();
  private closed = false;

  constructor(
    private readonly outbox: Outbox,
    private readonly runs: Runs,
    private readonly o: CallbackOptions,
  ) {}

  /** Hooks the runs' events and sends what a previous agent still owed. */
  start(): () => void {
    for (const d of this.outbox.pending()) this.enqueue(d);
    return this.runs.onEvent((e, run) => this.onRunEvent(e, run));
  }

  private onRunEvent(e: RunEventNotice, run: Run): void {
    const cb = run.options?.callback;
    if (!cb) return;
    const kind = kindOf(e, run);
    if (!kind || !(cb.events ?? DEFAULT_CALLBACK_EVENTS).includes(kind)) return;
    const fields: Record<string, unknown> = {
      event: kind,
      run_id: run.id,
      returntype: kind,
      ...(cb.signature !== undefined ? { signature: cb.signature } : {}),
      ...(kind === 'queued' ? { position: e.data.position } : {}),
      ...(e.type === 'last' ? { exit_data: { ...run.exitData, finished: true } } : {}),
    };
    const d: Delivery = { id: `${run.id}-${e.id}`, key: run.id, url: cb.url, format: cb.format ?? 'json', fields };
    this.outbox.add(d);
    this.enqueue(d);
  }

  private enqueue(d: Delivery): void {
    const prev = this.chains.get(d.key) ?? Promise.resolve();
    const next = prev.then(() => this.deliver(d)).catch((err) => this.o.log(`drover: callback ${d.id}: ${message(err)}`));
    this.chains.set(d.key, next);
    void next.then(() => {
      if (this.chains.get(d.key) === next) this.chains.delete(d.key);
    });
  }

  private async deliver(d: Delivery): Promise<void> {
    const tries = this.o.backoffMs.length + 1;
    for (let attempt = 1; attempt <= tries && !this.closed; attempt++) {
      const status = await this.attempt(d, attempt);
      if (status !== null && status >= 200 && status < 300) return this.outbox.done(d.id);
      if (!retryable(status)) return this.outbox.done(d.id);
      if (attempt < tries) await this.sleep(this.o.backoffMs[attempt - 1]);
    }
    if (this.closed) return;
    this.outbox.done(d.id);
    if (d.giveUp) return;
    const notice: Delivery = {
      id: `${d.id}-giveup`,
      key: d.key,
      url: d.url,
      format: d.format,
      giveUp: true,
      fields: {
        returntype: 'failed',
        returnmsg: `no response received from the callback URL after ${tries} tries`,
        ...(d.fields.signature !== undefined ? { signature: d.fields.signature } : {}),
        ...(d.fields.run_id !== undefined ? { run_id: d.fields.run_id } : {}),
      },
    };
    this.outbox.add(notice);
    await this.deliver(notice);
  }

  /** One POST; the status, or null for no answer. Noted as a callback_attempt event. */
  private async attempt(d: Delivery, attempt: number): Promise<number | null> {
    const { body, type } = encode(d);
    const headers: Record<string, string> = { 'content-type': type, 'x-drover-delivery': d.id, 'user-agent': 'drover' };
    if (this.o.secret) headers['x-drover-signature'] = sign(this.o.secret, body);
    const ac = new AbortController();
    this.aborts.add(ac);
    const timer = setTimeout(() => ac.abort(new Error(`no answer within ${this.o.timeoutMs} ms`)), this.o.timeoutMs);
    let status: number | null = null;
    let error: string | undefined;
    try {
      const res = await fetch(d.url, { method: 'POST', body, headers, signal: ac.signal, redirect: 'manual' });
      status = res.status;
      await res.body?.cancel().catch(() => {});
    } catch (err) {
      error = ac.signal.aborted ? message(ac.signal.reason) : message((err as { cause?: unknown }).cause ?? err);
    } finally {
      clearTimeout(timer);
      this.aborts.delete(ac);
    }
    this.runs.note(d.key, 'callback_attempt', {
      delivery: d.id,
      url: d.url,
      attempt,
      ...(status !== null ? { status } : { error }),
      ...(d.giveUp ? { give_up_notice: true } : {}),
    });
    return status;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  /** Stops sending; what is owed stays in the outbox for the next agent. */
  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const a of this.aborts) a.abort(new Error('the agent is stopping'));
    this.outbox.close();
  }
}
