// The experiment runner of seed 003 (ModellingWebLab fc-runner) on top of runs: an experiment is
// a run whose app is the model archive, with the protocol archive unpacked under `protocol/`
// (and the optional dataset and fitting spec under `dataset/` and `fittingSpec/`), running the
// Procfile type `experiment` (settable) with admins first and users served fairly. Its callbacks
// go out in the runner's form format (see callbacks.ts); a cancel sends SIGUSR1, then stops it
// after 5 s, and still sends the final callback with whatever results it left.
//
// As the runner does, a submit answers at once: the run and the request are saved (the request
// as experiment.json in the run's directory, fsync'ed), and the archives are fetched afterwards.
// A fetch or unpack that fails ends the run failed, which its web app hears as a `failed`
// callback naming the archive. An agent that stops while an experiment's archives are being
// fetched leaves the request on disk; the next agent fetches them again from the start (the
// runner's Celery acknowledges late, so a task its worker lost runs again).
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseSignal } from '../os/signals.js';
import { message } from '../process/wording.js';
import { writeDurably } from '../store/desired.js';
import { EXPERIMENT_OUTPUT_DIR } from './callbacks.js';
import { RunError, type Run, type Runs, type StartOptions } from './runs.js';
import type { Supervisor } from './supervisor.js';

export interface ExperimentRequest {
  callBack: string;
  signature: string;
  /** Archive URLs. */
  model: string;
  protocol: string;
  dataset?: string;
  fittingSpec?: string;
  user: string;
  isAdmin: boolean;
}

/** The seed's cancel: USR1, then the usual stop 5 s later. */
export const CANCEL_GRACE_MS = 5000;

/** The request, kept in the run's directory until its archives are in place. */
const REQUEST_FILE = 'experiment.json';

const ARCHIVES = ['model', 'protocol', 'dataset', 'fittingSpec'] as const;

function isRequest(v: unknown): v is ExperimentRequest {
  const r = v as Record<string, unknown> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    ['callBack', 'signature', 'model', 'protocol', 'user'].every((k) => typeof r[k] === 'string') &&
    typeof r.isAdmin === 'boolean'
  );
}

export class Experiments {
  /** Experiments whose archives are being fetched, by run id: their way out (cancel, agent stop). */
  private readonly preparing = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private stopping = false;

  constructor(
    private readonly runs: Runs,
    private readonly supervisor: Supervisor,
    private readonly o: { processType: string; log: (line: string) => void },
  ) {
    runs.onShutdown(async () => {
      this.stopping = true;
      for (const p of this.preparing.values()) p.abort.abort(new Error('the agent is stopping'));
      await Promise.all([...this.preparing.values()].map((p) => p.done));
    });
    // Made once the runs are restored: experiments a previous agent was still fetching.
    this.resume().catch((err) => o.log(`drover: cannot resume the experiments being fetched: ${message(err)}`));
  }

  /** The run options of an experiment: its callbacks, its place in the queue, its environment. */
  private optionsOf(run: Run, req: ExperimentRequest): StartOptions {
    return {
      env: {
        EXPERIMENT_ID: run.id,
        EXPERIMENT_USER: req.user,
        ...(run.appRoot ? { OUTPUT_DIR: join(run.appRoot, EXPERIMENT_OUTPUT_DIR), PROTOCOL_DIR: join(run.appRoot, 'protocol') } : {}),
      },
      output: [EXPERIMENT_OUTPUT_DIR],
      callback: { url: req.callBack, signature: req.signature, format: 'form', profile: 'experiment' },
      priority: req.isAdmin ? 'admin' : 'normal',
      user: req.user,
      processType: this.o.processType,
      // The runner's Celery acknowledges late: a task its worker died in runs again.
      retryOnRestart: true,
    };
  }

  /**
   * Saves the run and the request (durably) and resolves with the run; its archives are fetched
   * afterwards (prepare). A failure to save leaves nothing.
   */
  async submit(req: ExperimentRequest): Promise<Run> {
    const run = await this.runs.create(`experiment ${req.signature}`.slice(0, 200));
    try {
      await writeDurably(run.dir, REQUEST_FILE, JSON.stringify(req));
    } catch (err) {
      await this.runs.finalise(run).catch(() => {});
      throw new RunError(507, `the experiment cannot be saved: ${message(err)}`);
    }
    // Its user and priority show at once (GET /runs/ID), as they will in the queue.
    run.options = this.optionsOf(run, req);
    this.prepare(run, req);
    return run;
  }

  /** Fetches and unpacks the archives in the background, then queues the run; a failure ends it failed. */
  private prepare(run: Run, req: ExperimentRequest): void {
    const abort = new AbortController();
    const done = this.fetchAndQueue(run, req, abort.signal).then(
      () => {
        // A cancel that came while it was being queued: it is a queued run now.
        if (abort.signal.aborted && !this.stopping) this.cancelRun(run);
      },
      (err: unknown) => {
        if (this.stopping) return; // the next agent fetches them again
        const cancelled = abort.signal.aborted;
        const why = cancelled ? 'cancelled while its archives were being fetched' : message(err);
        try {
          this.runs.abandon(run, this.optionsOf(run, req), why, cancelled);
        } catch (e) {
          this.o.log(`drover: experiment ${run.id}: ${why}; cannot end it: ${message(e)}`);
        }
      },
    );
    const entry = { abort, done: done.finally(() => this.preparing.delete(run.id)) };
    this.preparing.set(run.id, entry);
  }

  private async fetchAndQueue(run: Run, req: ExperimentRequest, signal: AbortSignal): Promise<void> {
    const fetch = async (field: string, url: string) => {
      try {
        // The runner's downloads send the signature as their credential.
        return (await this.supervisor.fetchArchive(url, signal, `Token ${req.signature}`)).file;
      } catch (err) {
        signal.throwIfAborted();
        throw new RunError(400, `${field}: cannot be fetched from ${url}: ${message(err)}`, field);
      }
    };
    const upload = this.runs.uploadPath(run);
    await copyFile(await fetch('model', req.model), upload);
    signal.throwIfAborted();
    try {
      await this.runs.setApp(run, upload);
    } catch (err) {
      if (err instanceof RunError && err.field === 'app') throw new RunError(400, err.message.replace(/^the app/, 'model'), 'model');
      throw err;
    }
    for (const f of ARCHIVES.slice(1)) {
      const url = req[f];
      if (!url) continue;
      const file = await fetch(f, url);
      signal.throwIfAborted();
      await this.runs.unpackInto(run, file, f, f);
    }
    signal.throwIfAborted();
    // From here on it is a queued run: cancelTask reaches it through runs.cancel.
    await this.runs.start(run, this.optionsOf(run, req));
  }

  /** Experiments a previous agent left with their archives not yet in place: fetched again. */
  private async resume(): Promise<void> {
    for (const run of this.runs.list()) {
      if (run.phase !== 'created' && run.phase !== 'uploaded') continue;
      let req: unknown;
      try {
        req = JSON.parse(await readFile(join(run.dir, REQUEST_FILE), 'utf8'));
      } catch {
        continue; // not an experiment (a run of POST /runs waiting for its app)
      }
      if (this.stopping) return;
      if (this.preparing.has(run.id)) continue;
      if (!isRequest(req)) {
        this.o.log(`drover: experiment ${run.id}: its saved request is unreadable`);
        continue;
      }
      run.options = this.optionsOf(run, req);
      this.runs.note(run.id, 'experiment_resumed', { reason: 'the agent restarted before its archives were in place: fetched again' });
      this.prepare(run, req);
    }
  }

  /**
   * `cancelTask`: an experiment whose archives are being fetched, or a queued one, never runs; a
   * running one gets SIGUSR1. Unknown ids are ignored, as the runner does.
   */
  cancel(id: string): void {
    const pending = this.preparing.get(id);
    if (pending) {
      pending.abort.abort(new Error('cancelled'));
      return;
    }
    const run = this.runs.get(id);
    if (run) this.cancelRun(run);
  }

  private cancelRun(run: Run): void {
    if (run.finished || run.phase === 'finalised' || run.phase === 'created' || run.phase === 'uploaded') return;
    const id = run.id;
    this.runs
      .cancel(run, parseSignal('SIGUSR1'), CANCEL_GRACE_MS)
      .catch((err) => this.o.log(`drover: experiment ${id}: cannot cancel: ${message(err)}`));
  }
}
