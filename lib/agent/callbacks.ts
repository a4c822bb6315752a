// Callbacks of runs and processes: each chosen event becomes a delivery in the durable outbox
// (store/outbox.ts), POSTed in order per run or process with an idempotency key and an HMAC,
// retried on connection errors, timeouts, 5xx, 408 and 429 with a settable backoff; after the
// last try one give-up notice in the same format, with its own tries. Every attempt is a
// `callback_attempt` event of the run or process. A form delivery with files (a run's outputs,
// an experiment's zip) is sent as multipart/form-data (attachments.ts).
import { createHmac } from 'node:crypto';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import type { InspectionEvent } from 'xstate';
import type { ExitInfo } from '../os/child.js';
import { exitDetail } from '../process/exit.js';
import { message } from '../process/wording.js';
import type { EventLog } from '../store/event-log/log.js';
import { cursorAt } from '../store/event-log/line.js';
import type { Attachment, CallbackSpec, Delivery, Outbox } from '../store/outbox.js';
import { attachmentDir, multipartBody, takeAttachments } from './attachments.js';
import type { Run, RunEventNotice, Runs, StageExit } from './runs.js';
import type { Supervisor } from './supervisor.js';

export const DEFAULT_CALLBACK_EVENTS = ['queued', 'running', 'finished', 'failed', 'cancelled'];
/** A process's kinds: a child started, a child ended, a download or build failed, the process was deleted. */
export const PROCESS_CALLBACK_EVENTS = ['running', 'exited', 'failed', 'deleted'];
/** Where an experiment's program leaves its results (zipped into the final callback's `experiment` field). */
export const EXPERIMENT_OUTPUT_DIR = 'outputs';
/** The form field of an experiment's output zip, as the runner names it. */
const EXPERIMENT_FILE_FIELD = 'experiment';

export interface CallbackOptions {
  secret: string;
  timeoutMs: number;
  backoffMs: number[];
  log: (line: string) => void;
  /** Processes created with a `callback` get deliveries too. */
  supervisor?: Supervisor;
  /** Told of each attempt's result and each delivery's end, for /metrics. */
  observe?: CallbackObserver;
}

export interface CallbackObserver {
  /** `ok` (2xx), `rejected` (a 4xx not retried), `retryable` (5xx, 408, 429), `error` (no answer). */
  attempt(result: 'ok' | 'rejected' | 'retryable' | 'error'): void;
  /** Another try is scheduled after a failed one. */
  retry(): void;
  /** A delivery is over: answered 2xx, refused for good, or given up after the last try. */
  delivery(outcome: 'delivered' | 'rejected' | 'given_up'): void;
}

/** Whether an answer (or a failure, status null) is worth another try. Pure. */
export function retryable(status: number | null): boolean {
  return status === null || status >= 500 || status === 408 || status === 429;
}

/** The body and content type of a delivery without files. Pure. */
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
export function sign(secret: string, body: string | Uint8Array): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** The callback kind of a run event, or null when it is none. */
export function kindOf(e: RunEventNotice, run: Run): string | null {
  if (e.type === 'queued') return 'queued';
  if (e.type === 'interrupted') return 'interrupted';
  if (e.type === 'start' && e.data.stage === 'execute') return 'running';
  if (e.type === 'last') {
    if (run.cancelled) return 'cancelled';
    const x = run.exitData.execute;
    return x && x.exit_code === 0 ? 'finished' : 'failed';
  }
  return null;
}

/**
 * The experiment runner's outcome, from the files its program left (paths relative to outputs/)
 * as fc-runner decides it: `success` when one of them is named `success`, else `partial` when
 * one is a `*plot_data.csv` (some plots came out), else `failed`. The runner ignores the exit
 * code; drover also counts a clean exit (0, not cancelled) as `success`. Pure.
 */
export function experimentOutcome(files: readonly string[], exitCode: number | null, cancelled: boolean): 'success' | 'partial' | 'failed' {
  const names = files.map((f) => f.slice(f.lastIndexOf('/') + 1));
  if (names.includes('success')) return 'success';
  if (exitCode === 0 && !cancelled) return 'success';
  return names.some((n) => n.endsWith('plot_data.csv')) ? 'partial' : 'failed';
}

/** The most of the program's output kept in an experiment's stdout.txt: its end. */
export const EXPERIMENT_STDOUT_MAX = 10 * 1024 * 1024;

/**
 * An experiment's stdout.txt, fed its run's event log lines (NDJSON) in order: the stdout and
 * stderr lines of its last execute stage, at most `max` bytes (the end kept, with a first line
 * saying how much was left out). Pure.
 */
export class ExperimentStdout {
  private kept: string[] = [];
  /** kept[first] is the oldest line still kept (no shift(): outputs can be millions of lines). */
  private first = 0;
  private bytes = 0;
  private dropped = 0;

  constructor(private readonly max = EXPERIMENT_STDOUT_MAX) {}

  add(line: string): void {
    let e: { type?: unknown; stream?: unknown; text?: unknown; data?: { stage?: unknown } };
    try {
      e = JSON.parse(line);
    } catch {
      return;
    }
    if (e.type === 'start' && e.data?.stage === 'execute') {
      // A retried run: only its last attempt's output.
      this.kept = [];
      this.first = this.bytes = this.dropped = 0;
    }
    if (e.type !== 'output' || (e.stream !== 'stdout' && e.stream !== 'stderr') || typeof e.text !== 'string') return;
    const text = `${e.text}\n`;
    this.kept.push(text);
    this.bytes += Buffer.byteLength(text);
    while (this.bytes > this.max && this.first < this.kept.length) {
      const n = Buffer.byteLength(this.kept[this.first++]);
      this.bytes -= n;
      this.dropped += n;
    }
    if (this.first > 1024 && this.first * 2 > this.kept.length) {
      this.kept = this.kept.slice(this.first);
      this.first = 0;
    }
  }

  text(): string {
    return (
      (this.dropped ? `[drover: the first ${this.dropped} bytes of output were left out]\n` : '') + this.kept.slice(this.first).join('')
    );
  }
}

/** What errors.txt gets appended when the experiment was stopped, as the runner notes its timeouts; null otherwise. Pure. */
export function experimentErrorNote(exit: StageExit | undefined, cancelled: boolean): string | null {
  if (exit?.timed_out) return 'Experiment terminated due to exceeding time limit';
  if (cancelled) return 'Experiment terminated: cancelled (cancelTask)';
  return null;
}

/** Why a run did not succeed, in words, for `returnmsg`. */
function failureText(run: Run): string {
  if (run.cancelled) return 'the experiment was cancelled';
  const x = run.exitData.execute ?? run.exitData.build;
  const stage = run.exitData.execute ? 'the experiment' : 'the build';
  if (!x) return 'the experiment did not run';
  // Never launched: its app could not be prepared (an archive fetch or unpack), and the error says which.
  if (!run.startedAt && x.error) return `the experiment did not run: ${x.error}`;
  if (x.error) return `${stage} failed: ${x.error}`;
  if (x.signal) return `${stage} was killed by ${x.signal}`;
  return `${stage} exited with code ${x.exit_code}`;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** The regular files under `dir`, as paths relative to it; none when it is missing. */
function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => relative(dir, join(e.parentPath, e.name)));
  } catch {
    return [];
  }
}

/** Every written line of a log, oldest kept first. */
async function* logLines(log: EventLog): AsyncGenerator<string> {
  let cursor = cursorAt(log.firstId);
  for (;;) {
    const r = await log.read(cursor);
    if (!r.lines.length) return;
    yield* r.lines;
    cursor = r.next;
  }
}

export class Callbacks {
  private readonly chains = new Map<string, Promise<void>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly aborts = new Set<AbortController>();
  /** Attachments being taken, by delivery id. */
  private readonly taking = new Map<string, Promise<void>>();
  /** The last state seen of each process actor (for its transitions). */
  private readonly states = new Map<string, string>();
  private readonly filesDir: string;
  private closed = false;

  constructor(
    private readonly outbox: Outbox,
    private readonly runs: Runs,
    private readonly o: CallbackOptions,
  ) {
    this.filesDir = join(dirname(outbox.file), 'files');
  }

  /** Hooks the runs' and processes' events and sends what a previous agent still owed. */
  start(): () => void {
    for (const d of this.outbox.pending()) this.enqueue(d);
    const offRuns = this.runs.onEvent((e, run) => this.onRunEvent(e, run));
    const offProcs = this.o.supervisor?.inspection.forwardRaw((ev) => this.onProcessStep(ev)) ?? (() => {});
    return () => {
      offRuns();
      offProcs();
    };
  }

  private onRunEvent(e: RunEventNotice, run: Run): void {
    const cb = run.options?.callback;
    if (!cb) return;
    if (cb.profile === 'experiment' && e.type === 'start' && e.data.stage === 'build' && run.appRoot) {
      // Its outputs/ exists when it runs, also when an agent restart unpacked its app afresh
      // (retry_on_restart). Synchronously: the build, then the program, come after this event.
      mkdirSync(join(run.appRoot, EXPERIMENT_OUTPUT_DIR), { recursive: true });
    }
    const kind = kindOf(e, run);
    if (!kind) return;
    if (cb.profile === 'experiment') return this.onExperimentEvent(e, run, cb, kind);
    if (!(cb.events ?? DEFAULT_CALLBACK_EVENTS).includes(kind)) return;
    const final = e.type === 'last';
    const fields: Record<string, unknown> = {
      event: kind,
      run_id: run.id,
      returntype: kind,
      ...(cb.signature !== undefined ? { signature: cb.signature } : {}),
      ...(kind === 'queued' ? { position: e.data.position } : {}),
      ...(kind === 'interrupted' ? { stage: e.data.stage, retry: e.data.retry } : {}),
      ...(final ? { exit_data: { ...run.exitData, finished: true } } : {}),
    };
    // A form receiver gets the run's output files with the final delivery.
    const attach: Attachment[] =
      final && cb.format === 'form' && run.appRoot
        ? (run.options?.output ?? []).map((p) => {
            const path = join(run.appRoot!, p);
            return isDirectory(path)
              ? { field: 'output', path, filename: `${p}.zip`, type: 'application/zip' }
              : { field: 'output', path, filename: p };
          })
        : [];
    this.add({
      id: `${run.id}-${e.id}`,
      key: run.id,
      url: cb.url,
      format: cb.format ?? 'json',
      fields,
      ...(attach.length ? { attach } : {}),
    });
  }

  /**
   * The seed's experiment runner: `running`, then success / partial / failed with the output
   * zip (outputs/, with stdout.txt and, when it was stopped, errors.txt written into it first).
   */
  private onExperimentEvent(e: RunEventNotice, run: Run, cb: CallbackSpec, kind: string): void {
    if (kind !== 'running' && e.type !== 'last') return;
    const base = { signature: cb.signature ?? '', taskid: run.id };
    if (kind === 'running') {
      this.add({ id: `${run.id}-${e.id}`, key: run.id, url: cb.url, format: 'form', fields: { ...base, returntype: 'running' } });
      return;
    }
    // Never run (its archives could not be fetched, or it was cancelled first): no zip.
    const out = run.appRoot && run.startedAt ? join(run.appRoot, EXPERIMENT_OUTPUT_DIR) : null;
    const outcome = experimentOutcome(out ? filesUnder(out) : [], run.exitData.execute?.exit_code ?? null, run.cancelled);
    this.add({
      id: `${run.id}-${e.id}`,
      key: run.id,
      url: cb.url,
      format: 'form',
      fields: { ...base, returntype: outcome, ...(outcome === 'success' ? {} : { returnmsg: failureText(run) }) },
      ...(out ? { attach: [{ field: EXPERIMENT_FILE_FIELD, path: out, filename: 'output.zip', type: 'application/zip' }] } : {}),
    });
  }

  /**
   * Writes stdout.txt (from the run's log) and the errors.txt note into an experiment's outputs/
   * before they are zipped. Safe to repeat (a delivery taken again after a restart).
   */
  private async experimentFiles(d: Delivery): Promise<void> {
    const run = typeof d.fields.taskid === 'string' ? this.runs.get(d.fields.taskid) : undefined;
    const dir = d.attach?.find((a) => a.field === EXPERIMENT_FILE_FIELD)?.path;
    if (!run || !dir || run.phase === 'finalised') return;
    await run.events.flush();
    const stdout = new ExperimentStdout();
    for await (const line of logLines(run.events)) stdout.add(line);
    await writeFile(join(dir, 'stdout.txt'), stdout.text());
    const note = experimentErrorNote(run.exitData.execute, run.cancelled);
    if (!note) return;
    const errors = join(dir, 'errors.txt');
    const had = await readFile(errors, 'utf8').catch(() => '');
    if (!had.includes(note)) await appendFile(errors, `\n${note}\n`);
  }

  /** A process actor's step (raw inspection): its callback kinds, for processes created with a callback. */
  private onProcessStep(ev: InspectionEvent): void {
    if (ev.type !== '@xstate.microstep' || ev.actorRef.sessionId !== ev.rootId) return;
    const slug = (ev.actorRef as { id?: string }).id ?? '';
    const proc = this.o.supervisor?.get(slug);
    const cb = proc?.record.callback;
    if (!proc || !cb) return;
    const snap = ev.snapshot as unknown as {
      value: string;
      context: { pid: number | null; lastExit: ExitInfo | null; errors: string[]; restarts: number };
    };
    const from = this.states.get(slug) ?? 'pending';
    const to = snap.value;
    this.states.set(slug, to);
    if (to === 'deleted') this.states.delete(slug);
    const kinds: [string, Record<string, unknown>][] = [];
    const type = ev.event.type;
    if (type === 'CHILD.STARTED') kinds.push(['running', { pid: ev.event.pid ?? snap.context.pid }]);
    if (type === 'CHILD.EXITED')
      kinds.push(['exited', { exit: exitDetail(snap.context.lastExit), restarting: to !== 'exited' && to !== 'deleted' }]);
    if (type.startsWith('xstate.error.actor.') && (from === 'downloading' || from === 'building'))
      kinds.push(['failed', { stage: from === 'downloading' ? 'download' : 'build', error: snap.context.errors.at(-1) ?? null }]);
    if (to === 'deleted' && from !== 'deleted') kinds.push(['deleted', {}]);
    const at = proc.events.lastId;
    for (const [kind, detail] of kinds) {
      if (!(cb.events ?? PROCESS_CALLBACK_EVENTS).includes(kind)) continue;
      this.add({
        id: `${slug}@${proc.record.createdAt}#${at}-${kind}`,
        key: `process:${slug}`,
        process: slug,
        url: cb.url,
        format: cb.format ?? 'json',
        fields: {
          event: kind,
          returntype: kind,
          slug,
          app: proc.app,
          node: proc.node,
          process_type: proc.processType,
          ...(cb.signature !== undefined ? { signature: cb.signature } : {}),
          restarts: snap.context.restarts,
          ...detail,
        },
      });
    }
  }

  /** Durable (fsync'ed) before it returns; then sent in its key's order. */
  private add(d: Delivery): void {
    this.outbox.add(d);
    this.enqueue(d);
  }

  private enqueue(d: Delivery): void {
    // Files are taken at once, not when the key's earlier deliveries are through.
    if (d.attach?.length) {
      const ready = d.attach.some((a) => a.field === EXPERIMENT_FILE_FIELD) ? this.experimentFiles(d) : Promise.resolve();
      const taking = ready
        .catch((err) => this.o.log(`drover: callback ${d.id}: cannot write stdout.txt or errors.txt: ${message(err)}`))
        .then(() => takeAttachments(attachmentDir(this.filesDir, d.id), d.attach!))
        .catch((err) => this.o.log(`drover: callback ${d.id}: cannot take its files: ${message(err)}`));
      this.taking.set(d.id, taking);
    }
    const prev = this.chains.get(d.key) ?? Promise.resolve();
    const next = prev.then(() => this.deliver(d)).catch((err) => this.o.log(`drover: callback ${d.id}: ${message(err)}`));
    this.chains.set(d.key, next);
    void next.then(() => {
      if (this.chains.get(d.key) === next) this.chains.delete(d.key);
    });
  }

  private async finished(d: Delivery): Promise<void> {
    // Stopped meanwhile: it stays owed, and the next agent sends it again under the same key.
    if (this.closed) return;
    this.outbox.done(d.id);
    this.taking.delete(d.id);
    if (d.attach?.length) await rm(attachmentDir(this.filesDir, d.id), { recursive: true, force: true });
  }

  private async deliver(d: Delivery): Promise<void> {
    await this.taking.get(d.id);
    const tries = this.o.backoffMs.length + 1;
    for (let attempt = 1; attempt <= tries && !this.closed; attempt++) {
      const status = await this.attempt(d, attempt);
      const ok = status !== null && status >= 200 && status < 300;
      this.o.observe?.attempt(ok ? 'ok' : status === null ? 'error' : retryable(status) ? 'retryable' : 'rejected');
      if (ok || !retryable(status)) {
        this.o.observe?.delivery(ok ? 'delivered' : 'rejected');
        return this.finished(d);
      }
      if (attempt < tries && !this.closed) {
        this.o.observe?.retry();
        await this.sleep(this.o.backoffMs[attempt - 1]);
      }
    }
    if (this.closed) return;
    this.o.observe?.delivery('given_up');
    await this.finished(d);
    if (d.giveUp) return;
    const notice: Delivery = {
      id: `${d.id}-giveup`,
      key: d.key,
      url: d.url,
      format: d.format,
      giveUp: true,
      ...(d.process ? { process: d.process } : {}),
      fields: {
        returntype: 'failed',
        returnmsg: `no response received from the callback URL after ${tries} tries`,
        ...(d.fields.signature !== undefined ? { signature: d.fields.signature } : {}),
        ...(d.fields.run_id !== undefined ? { run_id: d.fields.run_id } : {}),
        ...(d.fields.taskid !== undefined ? { taskid: d.fields.taskid } : {}),
        ...(d.fields.slug !== undefined ? { slug: d.fields.slug } : {}),
      },
    };
    this.outbox.add(notice);
    await this.deliver(notice);
  }

  /** One POST; the status, or null for no answer. Noted as a callback_attempt event. */
  private async attempt(d: Delivery, attempt: number): Promise<number | null> {
    const { body, type } = d.format === 'form' && d.attach?.length ? await multipartBody(d, attachmentDir(this.filesDir, d.id)) : encode(d);
    const headers: Record<string, string> = { 'content-type': type, 'x-drover-delivery': d.id, 'user-agent': 'drover' };
    if (this.o.secret) headers['x-drover-signature'] = sign(this.o.secret, body);
    const ac = new AbortController();
    this.aborts.add(ac);
    const timer = setTimeout(() => ac.abort(new Error(`no answer within ${this.o.timeoutMs} ms`)), this.o.timeoutMs);
    let status: number | null = null;
    let error: string | undefined;
    try {
      const res = await fetch(d.url, { method: 'POST', body: body as BodyInit, headers, signal: ac.signal, redirect: 'manual' });
      status = res.status;
      await res.body?.cancel().catch(() => {});
    } catch (err) {
      error = ac.signal.aborted ? message(ac.signal.reason) : message((err as { cause?: unknown }).cause ?? err);
    } finally {
      clearTimeout(timer);
      this.aborts.delete(ac);
    }
    const note = {
      delivery: d.id,
      url: d.url,
      attempt,
      ...(status !== null ? { status } : { error }),
      ...(d.giveUp ? { give_up_notice: true } : {}),
    };
    if (d.process) this.o.supervisor?.eventLog(d.process)?.append('callback_attempt', note);
    else this.runs.note(d.key, 'callback_attempt', note);
    return status;
  }

  private sleep(ms: number): Promise<void> {
    // An attempt cut short by close() comes back here: no timer may outlive the agent.
    if (this.closed) return Promise.resolve();
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
