import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';

/** Every agent setting. A YAML file can set any of them; command-line flags override the file. */
export interface Config {
  host: string;
  port: number;
  stateDir: string;
  /** Grace between SIGTERM and SIGKILL when stopping a child. */
  stopGraceMs: number;
  /** Restart backoff: first restart at once, then initial doubling to max; reset after a long run. */
  backoffInitialMs: number;
  backoffMaxMs: number;
  backoffResetMs: number;
  downloadTimeoutMs: number;
  downloadMaxBytes: number;
  unpackMaxBytes: number;
  unpackMaxEntries: number;
  /** Longest output line (in characters) emitted as one frame; longer lines are sent in pieces. */
  maxLineLength: number;
  /** Bytes queued for one attached client before it is disconnected as too slow. */
  clientMaxBufferedBytes: number;
  /** How many error messages a status document keeps (newest last). */
  maxErrors: number;
  /** Accept file: source URLs (local use and tests); off by default, since a caller could read host files. */
  allowFileUrls: boolean;
  /** File holding the shared secret (alternative to DROVER_TOKEN); '' for none. */
  tokenFile: string;
  /** Listen on a non-loopback address without a token (refused otherwise). */
  insecure: boolean;
  /** When running as root: the user children and build steps run as; '' for the agent's own user. */
  user: string;
  /** Hosts source_url (and every redirect) may point at: exact names or "*.example.com"; empty for any. */
  sourceHosts: string[];
  /** Origins (besides the agent's own) whose pages may change state: "https://dash.example.com". */
  allowedOrigins: string[];
  /** Names (besides loopback and the bound address) the agent answers to without a token: exact or "*.example.com". */
  allowedHosts: string[];
  downloadMaxRedirects: number;
  /** Until the response headers arrive, and the longest pause between body chunks. */
  downloadConnectTimeoutMs: number;
  downloadReadTimeoutMs: number;
  /** Uncompressed bytes allowed per archive byte, past a small floor: stops decompression bombs early. */
  unpackMaxRatio: number;
  /** The shared secret itself. Never a setting (flags show in `ps`): from DROVER_TOKEN or token_file. */
  token?: string;
  /** Largest upload to the blob store (POST /data). */
  blobMaxBytes: number;
  /** How long a blob no process refers to is kept after its last use. */
  blobRetentionMs: number;
  /** Live CPU/RSS sampling of every running process tree (one /proc pass for all); 0 turns it off. */
  usageSampleMs: number;
  /** Recent samples kept per process for GET /process-metrics. */
  usageSamples: number;
  /** Measure each run in its own cgroup where the agent may create one. */
  cgroups: boolean;
  /**
   * Start children through the resident spawn helper (native/drover-spawn) when it is built;
   * false spawns them from the agent itself, as without a C compiler.
   */
  spawnHelper: boolean;
  /** ws:// or wss:// URL of a Stately-style inspector to forward raw inspection events to; '' for none. */
  inspectUrl: string;
  /** A run shorter than this is an entry in `errors` even when it exits 0: a loop of clean exits is a crash loop. */
  minUptimeMs: number;
  /** A process checked for readiness (web) that does not accept connections on $PORT this long after starting is stopped and restarted (Heroku's R10). */
  bootTimeoutMs: number;
  /** start-first replace: how long the old child keeps serving after the process moved to the new port (clients re-read `port`). */
  replaceDrainMs: number;
  /** How long a pull-mode worker holds a job without reporting `running` (/api/v0.5/). */
  jobLeaseMs: number;
  /** The longest a contract or job long-poll is held, whatever the client asks. */
  jobPollMaxMs: number;
  /** Disk cap of each process's event log; the oldest events are dropped beyond it. */
  eventsMaxBytes: number;
  /** How long a deleted process's event log stays readable. */
  eventsRetentionMs: number;
  /** Bytes a proc (POST /procs) may hold in its memory captures, all its fds together; the rest is dropped and named in its errors. */
  procCaptureMaxBytes: number;
  /** A finished run not finalised (DELETE) by then is finalised automatically. */
  runTtlMs: number;
  /** A run created but never started by then is finalised automatically. */
  runUnstartedTtlMs: number;
  /** File holding a read-only token accepted on GET /metrics only (or DROVER_METRICS_TOKEN); '' for none. */
  metricsTokenFile: string;
  /** The read-only metrics token itself (never a setting, like `token`). */
  metricsToken?: string;
  /** Ask for the token on /healthz and /readyz too (by default they answer anyone, for load balancers). */
  healthAuth: boolean;
  /** /readyz says "not ready" when the state directory's file system has less free space than this. */
  readyMinFreeBytes: number;
  /** Runs building or executing at once (default: the number of cores); the rest wait queued. */
  maxConcurrentRuns: number;
  /** Of those, slots only admin-priority runs may use. */
  adminReservedRuns: number;
  /** Key of the X-Drover-Signature HMAC on callbacks; '' sends none. */
  callbackSecret: string;
  /** A callback POST not answered by then is a failed try. */
  callbackTimeoutMs: number;
  /** Waits before each retry of a callback, comma-separated ms; their count is the number of retries. */
  callbackBackoffMs: string;
  /** File holding the password of POST /experiments (or DROVER_EXPERIMENTS_PASSWORD); without one the endpoint is off. */
  experimentsPasswordFile: string;
  /** The password itself (never a setting, like `token`). */
  experimentsPassword?: string;
  /** The Procfile type an experiment runs. */
  experimentProcessType: string;
}

export const defaults: Config = {
  host: '127.0.0.1',
  port: 8080,
  stateDir: resolve('.drover'),
  stopGraceMs: 10_000,
  backoffInitialMs: 1_000,
  backoffMaxMs: 30_000,
  backoffResetMs: 60_000,
  downloadTimeoutMs: 300_000,
  downloadMaxBytes: 1024 * 1024 * 1024,
  unpackMaxBytes: 4 * 1024 * 1024 * 1024,
  unpackMaxEntries: 200_000,
  maxLineLength: 64 * 1024,
  clientMaxBufferedBytes: 4 * 1024 * 1024,
  maxErrors: 20,
  allowFileUrls: false,
  tokenFile: '',
  insecure: false,
  user: '',
  sourceHosts: [],
  allowedOrigins: [],
  allowedHosts: [],
  downloadMaxRedirects: 5,
  downloadConnectTimeoutMs: 30_000,
  downloadReadTimeoutMs: 60_000,
  unpackMaxRatio: 100,
  blobMaxBytes: 1024 * 1024 * 1024,
  blobRetentionMs: 3_600_000,
  usageSampleMs: 5_000,
  usageSamples: 120,
  cgroups: true,
  spawnHelper: true,
  inspectUrl: '',
  eventsMaxBytes: 64 * 1024 * 1024,
  eventsRetentionMs: 3_600_000,
  runTtlMs: 24 * 3_600_000,
  runUnstartedTtlMs: 3_600_000,
  maxConcurrentRuns: availableParallelism(),
  adminReservedRuns: 1,
  callbackSecret: '',
  callbackTimeoutMs: 30_000,
  callbackBackoffMs: '60000,120000,240000',
  experimentsPasswordFile: '',
  experimentProcessType: 'experiment',
  minUptimeMs: 1_000,
  bootTimeoutMs: 60_000,
  replaceDrainMs: 1_000,
  procCaptureMaxBytes: 64 * 1024 * 1024,
  jobLeaseMs: 600_000,
  jobPollMaxMs: 60_000,
  metricsTokenFile: '',
  healthAuth: false,
  readyMinFreeBytes: 64 * 1024 * 1024,
};

export class ConfigError extends Error {}

const fileKeys: Record<string, keyof Config> = {
  host: 'host',
  port: 'port',
  state_dir: 'stateDir',
  stop_grace_ms: 'stopGraceMs',
  backoff_initial_ms: 'backoffInitialMs',
  backoff_max_ms: 'backoffMaxMs',
  backoff_reset_ms: 'backoffResetMs',
  download_timeout_ms: 'downloadTimeoutMs',
  download_max_bytes: 'downloadMaxBytes',
  unpack_max_bytes: 'unpackMaxBytes',
  unpack_max_entries: 'unpackMaxEntries',
  max_line_length: 'maxLineLength',
  client_max_buffered_bytes: 'clientMaxBufferedBytes',
  max_errors: 'maxErrors',
  allow_file_urls: 'allowFileUrls',
  token_file: 'tokenFile',
  insecure: 'insecure',
  user: 'user',
  source_hosts: 'sourceHosts',
  allowed_origins: 'allowedOrigins',
  allowed_hosts: 'allowedHosts',
  download_max_redirects: 'downloadMaxRedirects',
  download_connect_timeout_ms: 'downloadConnectTimeoutMs',
  download_read_timeout_ms: 'downloadReadTimeoutMs',
  unpack_max_ratio: 'unpackMaxRatio',
  blob_max_bytes: 'blobMaxBytes',
  blob_retention_ms: 'blobRetentionMs',
  usage_sample_ms: 'usageSampleMs',
  usage_samples: 'usageSamples',
  cgroups: 'cgroups',
  spawn_helper: 'spawnHelper',
  inspect_url: 'inspectUrl',
  events_max_bytes: 'eventsMaxBytes',
  events_retention_ms: 'eventsRetentionMs',
  run_ttl_ms: 'runTtlMs',
  run_unstarted_ttl_ms: 'runUnstartedTtlMs',
  max_concurrent_runs: 'maxConcurrentRuns',
  admin_reserved_runs: 'adminReservedRuns',
  callback_secret: 'callbackSecret',
  callback_timeout_ms: 'callbackTimeoutMs',
  callback_backoff_ms: 'callbackBackoffMs',
  experiments_password_file: 'experimentsPasswordFile',
  experiment_process_type: 'experimentProcessType',
  min_uptime_ms: 'minUptimeMs',
  boot_timeout_ms: 'bootTimeoutMs',
  replace_drain_ms: 'replaceDrainMs',
  proc_capture_max_bytes: 'procCaptureMaxBytes',
  job_lease_ms: 'jobLeaseMs',
  job_poll_max_ms: 'jobPollMaxMs',
  metrics_token_file: 'metricsTokenFile',
  health_auth: 'healthAuth',
  ready_min_free_bytes: 'readyMinFreeBytes',
};

// A host name or "*.domain", lower case; the same forms an allow-list entry may take.
const HOST_PATTERN = /^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$|^\[[0-9a-f:.]+\]$/;

/** Lower bounds other than the usual (0 for ports, redirects and times, else 1). */
const minimums: Partial<Record<keyof Config, number>> = {
  eventsMaxBytes: 1024 * 1024,
  jobLeaseMs: 100,
  readyMinFreeBytes: 0,
  adminReservedRuns: 0,
};

/** Names accepted in a config file (snake_case) and as flags (--kebab-case). */
export const settingNames = Object.keys(fileKeys);

/** Checks one setting's value and converts it to the type the agent uses. */
export function coerceSetting(name: string, value: unknown): [keyof Config, Config[keyof Config]] {
  const key = fileKeys[name];
  if (!key) throw new ConfigError(`unknown setting "${name}"`);
  if (typeof defaults[key] === 'boolean') {
    if (value === true || value === 'true') return [key, true];
    if (value === false || value === 'false') return [key, false];
    throw new ConfigError(`setting "${name}" must be true or false, got ${JSON.stringify(value)}`);
  }
  if (Array.isArray(defaults[key])) {
    // A YAML list, or a comma-separated string from a flag.
    const items = typeof value === 'string' ? value.split(',') : value;
    if (!Array.isArray(items) || items.some((h) => typeof h !== 'string'))
      throw new ConfigError(`setting "${name}" must be a list of host names`);
    const hosts = (items as string[]).map((h) => h.trim().toLowerCase()).filter((h) => h !== '');
    if (key === 'allowedOrigins') return [key, hosts.map((o) => origin(name, o))];
    const bad = hosts.find((h) => !HOST_PATTERN.test(h));
    if (bad !== undefined) throw new ConfigError(`setting "${name}": ${JSON.stringify(bad)} is not a host name (or "*.domain")`);
    return [key, hosts];
  }
  if (typeof defaults[key] === 'string') {
    if (typeof value !== 'string' || value === '') throw new ConfigError(`setting "${name}" must be a non-empty string`);
    if (key === 'inspectUrl' && !/^wss?:\/\/[^/]/.test(value))
      throw new ConfigError(`setting "${name}" must be a ws:// or wss:// URL, got ${JSON.stringify(value.slice(0, 200))}`);
    if (key === 'experimentProcessType' && !/^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/.test(value))
      throw new ConfigError(`setting "${name}" must be a Procfile type: 1-63 letters, digits, "_" or "-"`);
    if (key === 'callbackBackoffMs' && !/^\s*\d+(\s*,\s*\d+)*\s*$/.test(value))
      throw new ConfigError(
        `setting "${name}" must be comma-separated milliseconds like "60000,120000,240000", got ${JSON.stringify(value.slice(0, 200))}`,
      );
    return [key, key === 'stateDir' ? resolve(value) : value];
  }
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  const min = minimums[key] ?? (key === 'port' || key === 'downloadMaxRedirects' || key.endsWith('Ms') ? 0 : 1);
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || (key === 'port' && n > 65535)) {
    throw new ConfigError(
      `setting "${name}" must be an integer${key === 'port' ? ' from 0 to 65535' : ` >= ${min}`}, got ${JSON.stringify(value)}`,
    );
  }
  return [key, n];
}

/** An allowed origin as browsers send it: scheme, host and port only ("https://dash.example.com"). */
function origin(name: string, value: string): string {
  let u: URL | null = null;
  try {
    u = new URL(value);
  } catch {
    // reported below
  }
  const bare =
    u && (u.protocol === 'http:' || u.protocol === 'https:') && !u.username && !u.password && u.pathname === '/' && !u.search && !u.hash;
  if (!u || !bare || /\/./.test(value.replace(/^[a-z]+:\/\//, '')))
    throw new ConfigError(
      `setting "${name}": ${JSON.stringify(value)} is not an origin like "https://dash.example.com" (scheme, host and port only)`,
    );
  return u.origin;
}

export function applySettings(base: Config, settings: Record<string, unknown>): Config {
  const out: Config = { ...base };
  for (const [name, value] of Object.entries(settings)) {
    const [key, v] = coerceSetting(name, value);
    (out as unknown as Record<string, unknown>)[key] = v;
  }
  return out;
}

export async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let doc: unknown;
  try {
    // Loaded here: an agent without a config file need not hold the YAML parser.
    const { parse } = await import('yaml');
    doc = parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc == null) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`config file ${file} must be a mapping of settings`);
  return doc as Record<string, unknown>;
}
