import { parseArgs } from 'node:util';
import { applySettings, ConfigError, defaults, readConfigFile, settingNames, type Config } from '../agent/config.js';
import { startAgent, StartError, type Agent } from '../http/server.js';
import { loadExperimentsPassword, loadMetricsToken, loadToken } from '../http/token.js';
import { SystemdNotifier } from '../os/sd-notify.js';

export const serveUsage = `Usage: drover serve [options]

Runs the agent: an HTTP + WebSocket API that downloads, builds, runs and supervises
Procfile processes. Ctrl-C (SIGINT) or SIGTERM stops every process gracefully and exits;
a second Ctrl-C kills them at once.

Options:
  --host HOST          address to listen on (default ${defaults.host})
  --port PORT          port to listen on (default ${defaults.port}; 0 picks a free one)
  --state-dir DIR      where releases and state live (default ./.drover)
  --config FILE        YAML file setting any option below (snake_case keys); flags win
  --token-file FILE    require this shared secret on every request (or set DROVER_TOKEN)
  --insecure           allow a non-loopback --host without a token (anyone reaching it can run commands)
  --user NAME          when run as root: run children and build steps as this user
  --source-hosts LIST  comma-separated hosts source_url may use, e.g. codeload.github.com,*.example.com
                       (also needed for link-local and cloud-metadata addresses, refused otherwise)
  --allowed-origins LIST  comma-separated origins whose web pages may change state besides the
                       agent's own, e.g. https://dash.example.com (others get 403)
  --allowed-hosts LIST comma-separated names the agent answers to without a token besides
                       loopback and the bound address, e.g. myhost.lan (others get 421)
  --metrics-token-file FILE  a read-only token accepted on GET /metrics only (or set
                       DROVER_METRICS_TOKEN), for a Prometheus that should not hold the agent token
  --health-auth true   ask for the token on /healthz and /readyz too (open by default)
  --experiments-password-file FILE  turn on POST /experiments (the experiment runner's form API)
                       with this password (or set DROVER_EXPERIMENTS_PASSWORD); it takes the
                       password instead of the token
  --experiment-process-type TYPE  the Procfile type an experiment runs (default experiment)
  --inspect-url URL    also forward raw XState inspection events to a Stately-style
                       inspector's WebSocket (ws:// or wss://); retried in the background
  --<setting> VALUE    any setting, e.g. --stop-grace-ms 5000, --backoff-max-ms 10000
Settings: ${settingNames.join(', ')}

API (GET /openapi.json describes every route, body and answer; SLUG is APP.NODE):
  GET /                            the index: links to everything else
  GET /list-processes              every process's status document
  POST /create-process             run process NODE of APP from a source archive
  GET /process-status/SLUG         one process's status document
  POST /delete-process/SLUG        stop it and its process group, and forget it
  GET /process-events/SLUG         its event log, NDJSON or Server-Sent Events
  WS /attach-console/SLUG          its output as a WebSocket, one text frame per line
  POST /signal-process/SLUG        signal its process group
  POST /stop-process/SLUG          stop it gracefully; it stays exited until start
  POST /start-process/SLUG         start an exited process
  POST /restart-process/SLUG       graceful stop, then a new child at once
  POST /replace-process/SLUG       a new release (source, env), built while the old child runs
  GET /process-metrics/SLUG        its usage per stage and recent samples
  POST /data                       store a blob (the deploy command's uploads)
  GET /data                        the blobs held
  GET /data/ID                     one blob's metadata
  GET /data/ID/blob                one blob's bytes
  GET /inspect                     transition records as Server-Sent Events
  WS /inspect                      the same records as a WebSocket
  GET /machine                     the state machine, for drawing
  GET /ui                          the dashboard (no token needed for its files)
  GET /ui/FILE                     the dashboard's scripts and styles
  GET /metrics                     Prometheus metrics (also with --metrics-token-file's token)
  GET /healthz                     liveness (no token needed unless --health-auth true)
  GET /readyz                      readiness: restore done, state dir writable, disk not full
  GET /openapi.json                the OpenAPI 3.1 document of all of this
Procstar's process API (ID is a proc id):
  GET /procs                       every proc's result
  POST /procs                      start procs from {"specs": {ID: SPEC}}
  GET /procs/ID                    one proc's result
  DELETE /procs/ID                 forget a proc that is not running
  POST /procs/ID/signals/SIGNUM    signal a proc's process
  GET /procs/ID/output/FD/data     a proc's captured output
Runs, run-to-completion jobs (ID is a run id):
  POST /runs                       create a run
  GET /runs                        every run
  GET /runs/ID                     one run's document
  DELETE /runs/ID                  finalise it: stop it, remove its files
  PUT /runs/ID/app                 upload its code (tar.gz) or {"source_url"}/{"blob"}
  GET /runs/ID/app                 the code back
  PUT /runs/ID/cache               upload its build cache
  GET /runs/ID/cache               the build cache after a successful build
  POST /runs/ID/start              queue it: build, then run its process type or command
  POST /runs/ID/stop               stop it
  POST /runs/ID/cancel             cancel it with a chosen signal
  GET /runs/ID/events              its events, NDJSON or Server-Sent Events
  GET /runs/ID/exit-data           exit codes and usage of each stage
  GET /runs/ID/output              its first output file
  GET /runs/ID/files/PATH          a file (or a directory as tar.gz) of its directory
  GET /queue                       the run queue in serve order
  POST /experiments                the experiment runner's form API (with --experiments-password-file)
Pleiades worker API:
  GET /api/v0.5/ping               is the API up
  POST /api/v0.5/worker            register a worker
  GET /api/v0.5/worker/ID          one worker
  POST /api/v0.5/worker/ID/contract  take a job (long poll)
  POST /api/v0.5/lambda            register a lambda
  GET /api/v0.5/lambda/ID          one lambda
  POST /api/v0.5/job               submit a job
  GET /api/v0.5/job/ID             one job (?except=STATE&timeout=s to wait)
  POST /api/v0.5/job/ID            report a job's status
  POST /api/v0.5/data              store data (multipart, field file)
  GET /api/v0.5/data/ID            one data object's metadata
  GET /api/v0.5/data/ID/blob       its bytes`;

/** Turns flags, the config file and DROVER_TOKEN into a Config; throws ConfigError with a one-line message. */
export async function resolveConfig(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  warn: (line: string) => void = () => {},
): Promise<Config> {
  const options: Record<string, { type: 'string' | 'boolean' }> = { config: { type: 'string' } };
  for (const name of settingNames) options[name.replaceAll('_', '-')] = { type: 'string' };
  options.insecure = { type: 'boolean' }; // a switch: "--insecure", not "--insecure true"
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }) as {
      values: Record<string, string | boolean | undefined>;
    });
  } catch (err) {
    throw new ConfigError((err as Error).message.split('\n')[0]);
  }
  const fromFile = typeof values.config === 'string' ? await readConfigFile(values.config) : {};
  const fromFlags: Record<string, unknown> = {};
  for (const [flag, value] of Object.entries(values)) {
    if (flag !== 'config' && value !== undefined) fromFlags[flag.replaceAll('-', '_')] = value;
  }
  const config = applySettings(applySettings(defaults, fromFile), fromFlags);
  const { token, warnings } = await loadToken(config.tokenFile, env);
  for (const w of warnings) warn(w);
  const metrics = await loadMetricsToken(config.metricsTokenFile, env);
  for (const w of metrics.warnings) warn(w);
  const experiments = await loadExperimentsPassword(config.experimentsPasswordFile, env);
  for (const w of experiments.warnings) warn(w);
  return {
    ...config,
    ...(token ? { token } : {}),
    ...(metrics.token ? { metricsToken: metrics.token } : {}),
    ...(experiments.token ? { experimentsPassword: experiments.token } : {}),
  };
}

export async function serve(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${serveUsage}\n`);
    return 0;
  }
  // Taken out of the environment before anything starts, so no child inherits it.
  const notifier = SystemdNotifier.fromEnv({ warn: (line) => process.stderr.write(`drover: warning: ${line}\n`) });
  const started = await launch(argv);
  if (typeof started === 'number') {
    await notifier?.close();
    return started;
  }
  const { agent } = started;
  process.stderr.write(`drover: ${agent.supervisor.describeMeasurement()}\n`);
  // Restore has finished and the API listens: systemd may start what depends on the agent.
  notifier?.ready(`listening on ${agent.url}, ${agent.supervisor.list().length} process(es)`);
  const code = await untilSignal(agent, () => notifier?.stopping('stopping every process'));
  await notifier?.close();
  return code;
}

/**
 * Resolves the config and starts the agent, saying where it listens. A bad option or a failed
 * start is one line on stderr and an exit code (2 or 1) instead; `hint` may add to that line.
 */
export async function launch(
  argv: string[],
  hint: (message: string) => string = () => '',
): Promise<{ agent: Agent; config: Config } | number> {
  let config: Config;
  try {
    config = await resolveConfig(argv, process.env, (line) => process.stderr.write(`drover: warning: ${line}\n`));
    // Read once; children never inherit it, even through a spawn that forgets to pass an env.
    delete process.env.DROVER_TOKEN;
    delete process.env.DROVER_METRICS_TOKEN;
    delete process.env.DROVER_EXPERIMENTS_PASSWORD;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`drover: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  let agent: Agent;
  try {
    agent = await startAgent(config);
  } catch (err) {
    if (err instanceof StartError) {
      process.stderr.write(`drover: ${err.message}${hint(err.message)}\n`);
      return 1;
    }
    throw err;
  }
  process.stderr.write(`drover: agent listening on ${agent.url} (state in ${config.stateDir})\n`);
  return { agent, config };
}

/** Runs until SIGINT/SIGTERM, then stops every process gracefully; a second Ctrl-C kills them. */
export function untilSignal(agent: Agent, onStopping: () => void = () => {}): Promise<number> {
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        if (sig === 'SIGINT') {
          process.stderr.write('drover: second interrupt, killing every process now\n');
          agent.kill();
          resolve(130);
        }
        return;
      }
      stopping = true;
      onStopping();
      process.stderr.write(`drover: ${sig}, stopping every process (Ctrl-C again to force)\n`);
      agent.close().then(() => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        resolve(0);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
