import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { applySettings, ConfigError, defaults, type Config } from '../agent/config.js';
import { apiBase, PleiadesClient } from '../agent/pleiades-client.js';
import { PullWorker } from '../agent/worker.js';
import { startAgent, StartError, type Agent } from '../http/server.js';
import { loadToken } from '../http/token.js';

export const workerUsage = `Usage: drover worker --server URL [options]

Pulls jobs from a Pleiades server (a drover agent's /api/v0.5/, or another) and runs them:
registers once (the id is kept in the state directory), then long-polls for a contract, fetches
the job, its lambda's codex (a source archive with a Procfile) and its input, builds the codex
as a release (cached by content hash), runs the Procfile entry named by the lambda's runtime
with the input on stdin and stdout captured to a file, uploads the output and reports the job
finished (or failed, with the exit detail). Network faults are retried with backoff (1 s
doubling to 60 s, jittered); a finished job's report is never dropped. Ctrl-C (SIGINT) or
SIGTERM stops taking jobs and lets the ones in hand finish (up to --drain); the rest are handed
back (reported failed: interrupted). A second Ctrl-C hands them back at once.

Options:
  --server URL         the server: http://host:port (drover's /api/v0.5 is added) or a full API base
  --runtime LIST       comma-separated runtimes this worker runs (default "default"); each is a
                       Procfile process type of the lambdas' codex
  --tags LIST          comma-separated tags this worker offers (a job runs here if all its tags are offered)
  --concurrency N      jobs run at once (default 1)
  --state-dir DIR      worker id, releases, job files and event logs (default ./.drover-worker)
  --token-file FILE    the server's shared secret (or set DROVER_TOKEN); also required by --serve's API
  --serve              also run the agent API to watch the jobs (drover ps, logs, the dashboard)
  --host HOST          with --serve: address to listen on (default ${defaults.host})
  --port PORT          with --serve: port (default ${defaults.port}; 0 picks a free one)
  --poll SECONDS       contract long-poll (default 20)
  --heartbeat SECONDS  how often a job in hand is reported running, renewing its lease (default 30)
  --drain SECONDS      on Ctrl-C, how long jobs in hand may finish before being handed back (default 30)`;

const NUMBER = /^\d+(\.\d+)?$/;

function list(v: string | undefined, fallback: string[]): string[] {
  if (v === undefined) return fallback;
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function num(name: string, v: string | undefined, fallback: number, min: number): number {
  if (v === undefined) return fallback;
  if (!NUMBER.test(v) || Number(v) < min) throw new ConfigError(`--${name} must be a number >= ${min}, got ${JSON.stringify(v)}`);
  return Number(v);
}

export async function worker(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${workerUsage}\n`);
    return 0;
  }
  let values: Record<string, string | boolean | undefined>;
  let config: Config;
  let server: string;
  let opts: { runtime: string[]; tags: string[]; concurrency: number; poll: number; heartbeat: number; drain: number };
  try {
    try {
      ({ values } = parseArgs({
        args: argv,
        options: {
          server: { type: 'string' },
          runtime: { type: 'string' },
          tags: { type: 'string' },
          concurrency: { type: 'string' },
          'state-dir': { type: 'string' },
          'token-file': { type: 'string' },
          serve: { type: 'boolean' },
          host: { type: 'string' },
          port: { type: 'string' },
          poll: { type: 'string' },
          heartbeat: { type: 'string' },
          drain: { type: 'string' },
        },
        strict: true,
        allowPositionals: false,
      }) as { values: Record<string, string | boolean | undefined> });
    } catch (err) {
      throw new ConfigError((err as Error).message.split('\n')[0]);
    }
    const s = (k: string) => values[k] as string | undefined;
    if (!s('server')) throw new ConfigError('--server URL is required (see drover worker --help)');
    try {
      server = apiBase(s('server')!);
      if (!/^https?:$/.test(new URL(server).protocol)) throw new Error();
    } catch {
      throw new ConfigError(`--server must be an http:// or https:// URL, got ${JSON.stringify(s('server'))}`);
    }
    opts = {
      runtime: list(s('runtime'), ['default']),
      tags: list(s('tags'), []),
      concurrency: num('concurrency', s('concurrency'), 1, 1),
      poll: num('poll', s('poll'), 20, 0),
      heartbeat: num('heartbeat', s('heartbeat'), 30, 0.1),
      drain: num('drain', s('drain'), 30, 0),
    };
    if (!Number.isInteger(opts.concurrency)) throw new ConfigError('--concurrency must be a whole number');
    if (opts.runtime.length === 0) throw new ConfigError('--runtime must name at least one runtime');
    const settings: Record<string, unknown> = { state_dir: resolve(s('state-dir') ?? '.drover-worker') };
    if (s('token-file')) settings.token_file = s('token-file');
    if (s('host')) settings.host = s('host');
    if (s('port')) settings.port = s('port');
    config = applySettings(defaults, settings);
    const { token, warnings } = await loadToken(config.tokenFile, process.env);
    for (const w of warnings) process.stderr.write(`drover: warning: ${w}\n`);
    delete process.env.DROVER_TOKEN; // children never inherit it
    if (token) config = { ...config, token };
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`drover: ${err.message}\n`);
      return 2;
    }
    throw err;
  }

  let agent: Agent;
  try {
    // The jobs are processes of the agent's one supervisor; a previous run's jobs are not
    // restored (their leases return them to the server's queue).
    agent = await startAgent(config, undefined, { listen: Boolean(values.serve), forget: (r) => r.job !== undefined });
  } catch (err) {
    if (err instanceof StartError) {
      process.stderr.write(`drover: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  if (values.serve) process.stderr.write(`drover: agent listening on ${agent.url} (state in ${config.stateDir})\n`);

  const pull = new PullWorker({
    client: new PleiadesClient({ server, token: config.token, maxBytes: config.downloadMaxBytes }),
    supervisor: agent.supervisor,
    blobs: agent.blobs,
    stateDir: config.stateDir,
    runtime: opts.runtime,
    tags: opts.tags,
    concurrency: opts.concurrency,
    pollSeconds: opts.poll,
    heartbeatMs: opts.heartbeat * 1000,
  });

  return new Promise<number>((done) => {
    let signals = 0;
    let cutShort: () => void = () => {};
    const now = new Promise<void>((r) => (cutShort = r));
    const onSignal = (sig: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        process.stderr.write('drover: worker: handing back the jobs in hand now\n');
        cutShort();
        return;
      }
      const busy = pull.busy.length;
      process.stderr.write(
        `drover: worker: ${sig}, taking no more jobs${busy ? `; ${busy} in hand get ${opts.drain} s to finish (Ctrl-C again to hand them back)` : ''}\n`,
      );
      void pull
        .stop(opts.drain * 1000, now)
        .then(() => agent.close())
        .then(() => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          done(0);
        });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    pull.start().catch(async (err: Error) => {
      if (signals) return; // stopping anyway
      process.stderr.write(`drover: worker: ${err.message}\n`);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await agent.close();
      done(1);
    });
  });
}
