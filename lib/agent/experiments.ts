// The experiment runner of seed 003 (ModellingWebLab fc-runner) on top of runs: an experiment is
// a run whose app is the model archive, with the protocol archive unpacked under `protocol/`
// (and the optional dataset and fitting spec under `dataset/` and `fittingSpec/`), running the
// Procfile type `experiment` (settable) with admins first and users served fairly. Its callbacks
// go out in the runner's form format (see callbacks.ts); a cancel sends SIGUSR1, then stops it
// after 5 s, and still sends the final callback with whatever results it left.
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseSignal } from '../os/signals.js';
import { message } from '../process/wording.js';
import { EXPERIMENT_OUTPUT_DIR } from './callbacks.js';
import { RunError, type Run, type Runs } from './runs.js';
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

export class Experiments {
  constructor(
    private readonly runs: Runs,
    private readonly supervisor: Supervisor,
    private readonly o: { processType: string; log: (line: string) => void },
  ) {}

  /**
   * Fetches the archives (with `Authorization: Token <signature>`, as the runner's downloads
   * send it) and queues the run; resolves once it is queued (durably). A failure leaves nothing.
   */
  async submit(req: ExperimentRequest): Promise<Run> {
    const run = await this.runs.create(`experiment ${req.signature}`.slice(0, 200));
    try {
      const auth = `Token ${req.signature}`;
      const fetch = async (field: string, url: string) => {
        try {
          return (await this.supervisor.fetchArchive(url, undefined, auth)).file;
        } catch (err) {
          throw new RunError(400, `${field}: cannot be fetched: ${message(err)}`, field);
        }
      };
      const upload = this.runs.uploadPath(run);
      await copyFile(await fetch('model', req.model), upload);
      try {
        await this.runs.setApp(run, upload);
      } catch (err) {
        if (err instanceof RunError && err.field === 'app') throw new RunError(400, err.message.replace(/^the app/, 'model'), 'model');
        throw err;
      }
      await this.runs.unpackInto(run, await fetch('protocol', req.protocol), 'protocol', 'protocol');
      if (req.dataset) await this.runs.unpackInto(run, await fetch('dataset', req.dataset), 'dataset', 'dataset');
      if (req.fittingSpec) await this.runs.unpackInto(run, await fetch('fittingSpec', req.fittingSpec), 'fittingSpec', 'fittingSpec');
      const outputs = join(run.appRoot!, EXPERIMENT_OUTPUT_DIR);
      await mkdir(outputs, { recursive: true });
      await this.runs.start(run, {
        env: {
          EXPERIMENT_ID: run.id,
          EXPERIMENT_USER: req.user,
          OUTPUT_DIR: outputs,
          PROTOCOL_DIR: join(run.appRoot!, 'protocol'),
        },
        output: [EXPERIMENT_OUTPUT_DIR],
        callback: { url: req.callBack, signature: req.signature, format: 'form', profile: 'experiment' },
        priority: req.isAdmin ? 'admin' : 'normal',
        user: req.user,
        processType: this.o.processType,
        // The runner's Celery acknowledges late: a task its worker died in runs again.
        retryOnRestart: true,
      });
      return run;
    } catch (err) {
      await this.runs.finalise(run).catch(() => {});
      throw err;
    }
  }

  /** `cancelTask`: a queued experiment never runs; a running one gets SIGUSR1. Unknown ids are ignored, as the runner does. */
  cancel(id: string): void {
    const run = this.runs.get(id);
    if (!run || run.finished || run.phase === 'finalised' || run.phase === 'created' || run.phase === 'uploaded') return;
    this.runs
      .cancel(run, parseSignal('SIGUSR1'), CANCEL_GRACE_MS)
      .catch((err) => this.o.log(`drover: experiment ${id}: cannot cancel: ${message(err)}`));
  }
}
