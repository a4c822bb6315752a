// Checks of request documents: every error is a 400 that names the field at fault.
import { envStringProblem } from '../os/exec-limits.js';
import { parseSignal, signalNamePattern, SIGNAL_NUMBERS, type SignalId } from '../os/signals.js';
import type { StopOptions } from '../process/machine.js';
import { RESTART_POLICIES, type RestartPolicy } from '../process/policy.js';
import type { CreateRequest, RestartRequest } from '../agent/supervisor.js';
import { hostAllowed } from '../release/download.js';
import { TYPE_PATTERN } from '../release/procfile.js';
import { asObject } from './body.js';
import { ApiError } from './errors.js';
import type { Schema } from '../api/schemas.js';
import { callbackSchema, validateCallback } from './callback.js';

// app and node become file names under the state directory: a conservative charset, no "..".
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_ENV = 1000;
const MAX_ENV_BYTES = 256 * 1024;
const MAX_URL_LENGTH = 8192;

export interface ValidateOptions {
  allowFileUrls: boolean;
  /** Hosts source_url may point at (see hostAllowed); empty or absent for any. */
  sourceHosts?: readonly string[];
}

function bad(field: string, detail: string): never {
  throw new ApiError(400, `${field}: ${detail}`, field);
}

function str(body: Record<string, unknown>, field: string): string {
  const v = body[field];
  if (v === undefined || v === null) bad(field, 'is required');
  if (typeof v !== 'string') bad(field, `must be a string, got ${Array.isArray(v) ? 'array' : typeof v}`);
  if (v === '') bad(field, 'must not be empty');
  return v;
}

function name(body: Record<string, unknown>, field: string, pattern: RegExp, what: string): string {
  const v = str(body, field);
  if (!pattern.test(v) || v.includes('..')) bad(field, `must be ${what}, got ${JSON.stringify(v.slice(0, 80))}`);
  return v;
}

/** Checks a create request; every error names the field at fault. */
export function validateCreate(body: unknown, opts: ValidateOptions): CreateRequest {
  const b = asObject(body);
  const app = name(b, 'app', NAME, '1-64 letters, digits, "_", "-" or "." (not starting with one of those, no "..")');
  const node = name(b, 'node', NAME, '1-64 letters, digits, "_", "-" or "." (not starting with one of those, no ".."), e.g. "web.0"');
  const processType = name(b, 'process_type', TYPE_PATTERN, '1-63 letters, digits, "_" or "-" (not starting with "-")');
  const sourceUrl = validateSourceUrl(b, opts);
  const restart = validateRestart(b.restart);
  const readiness = validateReadiness(b.readiness);
  const callback = validateCallback(b.callback);
  let envFrom: string | undefined;
  if (b.env_from !== undefined) {
    if (typeof b.env_from !== 'string' || b.env_from.length > 200) bad('env_from', 'must be the slug of a process whose env to start from');
    envFrom = b.env_from;
  }
  return {
    app,
    node,
    processType,
    sourceUrl,
    env: validateEnv(b.env),
    ...(restart ? { restart } : {}),
    ...(readiness ? { readiness } : {}),
    ...(envFrom !== undefined ? { envFrom } : {}),
    ...(callback ? { callback } : {}),
  };
}

/** `source_url` of a body: an absolute http(s) URL (file: when allowed) on an allowed host. */
export function validateSourceUrl(b: Record<string, unknown>, opts: ValidateOptions): string {
  const sourceUrl = str(b, 'source_url');
  if (sourceUrl.length > MAX_URL_LENGTH) bad('source_url', `is longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(sourceUrl);
  } catch {
    bad('source_url', `is not a valid absolute URL: ${JSON.stringify(sourceUrl.slice(0, 200))}`);
  }
  const schemes = opts.allowFileUrls ? ['http:', 'https:', 'file:'] : ['http:', 'https:'];
  if (!schemes.includes(url.protocol))
    bad(
      'source_url',
      `must use ${schemes.map((s) => s.slice(0, -1)).join(' or ')}, got ${JSON.stringify(url.protocol.slice(0, -1).slice(0, 40))}`,
    );
  if (url.protocol !== 'file:' && !hostAllowed(url.hostname, opts.sourceHosts)) {
    bad('source_url', `host ${JSON.stringify(url.hostname.slice(0, 100))} is not in the allowed source hosts`);
  }
  return sourceUrl;
}

/** `readiness`: `{"port": true}` (ready once $PORT accepts connections; web processes by default) or `{"port": false}`. */
export function validateReadiness(v: unknown): { port: boolean } | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) bad('readiness', 'must be an object like {"port": true}');
  for (const k of Object.keys(v as object)) if (k !== 'port') bad(`readiness.${k.slice(0, 40)}`, 'is not a readiness setting; use port');
  const port = (v as { port?: unknown }).port;
  if (typeof port !== 'boolean') bad('readiness.port', 'must be true or false');
  return { port };
}

export type ReplaceStrategy = 'stop-first' | 'start-first';

export interface ReplaceRequest {
  sourceUrl?: string;
  env?: Record<string, string>;
  /** Merge `env` into the process's env instead of replacing it. */
  envMerge?: boolean;
  strategy: ReplaceStrategy;
}

/** A replace request: `{source_url?, env?, strategy?}`; what is left out stays as it is. */
export function validateReplace(body: unknown, opts: ValidateOptions): ReplaceRequest {
  const b = asObject(body);
  for (const k of Object.keys(b)) {
    if (!['source_url', 'env', 'env_merge', 'strategy'].includes(k))
      bad(k.slice(0, 40), 'is not a field of a replace request; use source_url, env, env_merge, strategy');
  }
  const strategy = b.strategy === undefined ? 'stop-first' : b.strategy;
  if (strategy !== 'stop-first' && strategy !== 'start-first') bad('strategy', 'must be "stop-first" or "start-first"');
  if (b.env_merge !== undefined && typeof b.env_merge !== 'boolean') bad('env_merge', 'must be true or false');
  return {
    strategy,
    ...(b.source_url !== undefined ? { sourceUrl: validateSourceUrl(b, opts) } : {}),
    ...(b.env !== undefined ? { env: validateEnv(b.env) } : {}),
    ...(b.env_merge === true ? { envMerge: true } : {}),
  };
}

// A day: longer delays are more likely a unit mistake than a wish.
const MAX_DELAY_MS = 24 * 60 * 60 * 1000;
const RESTART_FIELDS: Record<string, keyof RestartRequest> = {
  policy: 'policy',
  delay_ms: 'delayMs',
  max_delay_ms: 'maxDelayMs',
  reset_after_ms: 'resetAfterMs',
};

/** `restart`: {policy, delay_ms, max_delay_ms, reset_after_ms}, each optional; errors name e.g. `restart.policy`. */
function validateRestart(v: unknown): RestartRequest | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) bad('restart', 'must be an object like {"policy": "on-failure"}');
  const out: RestartRequest = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    const key = Object.hasOwn(RESTART_FIELDS, k) ? RESTART_FIELDS[k] : undefined; // not "__proto__"
    const field = `restart.${k.slice(0, 40)}`;
    if (!key) bad(field, `is not a restart setting; use ${Object.keys(RESTART_FIELDS).join(', ')}`);
    if (key === 'policy') {
      if (typeof val !== 'string' || !RESTART_POLICIES.includes(val as RestartPolicy)) {
        bad(field, `must be one of ${RESTART_POLICIES.map((p) => `"${p}"`).join(', ')}, got ${JSON.stringify(val)?.slice(0, 80)}`);
      }
      out.policy = val as RestartPolicy;
    } else {
      if (typeof val !== 'number' || !Number.isInteger(val) || val < 0 || val > MAX_DELAY_MS) {
        bad(field, `must be an integer number of milliseconds from 0 to ${MAX_DELAY_MS}, got ${JSON.stringify(val)?.slice(0, 80)}`);
      }
      out[key as Exclude<keyof RestartRequest, 'policy'>] = val;
    }
  }
  if (out.delayMs !== undefined && out.maxDelayMs !== undefined && out.maxDelayMs < out.delayMs) {
    bad('restart.max_delay_ms', `must not be less than restart.delay_ms (${out.delayMs})`);
  }
  return out;
}

export function validateEnv(v: unknown): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) bad('env', 'must be an object mapping names to strings');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > MAX_ENV) bad('env', `has more than ${MAX_ENV} variables`);
  let bytes = 0;
  // Collected as pairs: assigning env["__proto__"] on a plain object would silently drop it.
  const env: [string, string][] = [];
  for (const [k, val] of entries) {
    if (!ENV_NAME.test(k)) bad('env', `${JSON.stringify(k.slice(0, 80))} is not a valid environment variable name`);
    if (typeof val !== 'string') bad('env', `value of ${k} must be a string, got ${val === null ? 'null' : typeof val}`);
    if (val.includes('\0')) bad('env', `value of ${k} must not contain NUL`);
    // The kernel refuses the whole exec past this (E2BIG): refuse the request instead.
    const tooLong = envStringProblem(k, val);
    if (tooLong) bad('env', tooLong);
    bytes += Buffer.byteLength(k) + Buffer.byteLength(val);
    if (bytes > MAX_ENV_BYTES) bad('env', `is larger than ${MAX_ENV_BYTES} bytes`);
    env.push([k, val]);
  }
  return Object.fromEntries(env);
}

/** Control requests take few fields: anything else is refused rather than ignored. */
export function validateFields(b: Record<string, unknown>, allowed: readonly string[]): Record<string, unknown> {
  for (const k of Object.keys(b)) {
    if (!allowed.includes(k))
      bad(k.slice(0, 40), allowed.length ? `is not accepted here; use ${allowed.join(', ')}` : 'is not accepted here; send {}');
  }
  return b;
}

function signalField(value: unknown, required: boolean): SignalId | undefined {
  if (value === undefined && !required) return undefined;
  if (value === undefined || value === null) bad('signal', 'is required, e.g. "SIGHUP" or 1');
  const sig = parseSignal(value);
  if (!sig) bad('signal', `${JSON.stringify(value).slice(0, 40)} is not a signal; use a name like "SIGHUP" or a number from 1 to 64`);
  return sig;
}

/** A signal request: `{"signal": "SIGHUP"}` or `{"signal": 1}`. */
export function validateSignal(b: Record<string, unknown>): SignalId {
  return signalField(validateFields(b, ['signal']).signal, true)!;
}

// An hour: a longer grace is more likely a unit mistake than a wish.
const MAX_GRACE_MS = 60 * 60 * 1000;

/** A stop or restart request: `{signal?, grace_ms?}`. */
export function validateStop(b: Record<string, unknown>): StopOptions {
  validateFields(b, ['signal', 'grace_ms']);
  const signal = signalField(b.signal, false);
  const g = b.grace_ms;
  if (g !== undefined && (typeof g !== 'number' || !Number.isInteger(g) || g < 0 || g > MAX_GRACE_MS)) {
    bad('grace_ms', `must be an integer number of milliseconds from 0 to ${MAX_GRACE_MS}, got ${JSON.stringify(g)?.slice(0, 40)}`);
  }
  return { ...(signal ? { signal: signal.number } : {}), ...(g !== undefined ? { graceMs: g as number } : {}) };
}

// The JSON Schemas of the request bodies, for GET /openapi.json. They describe exactly what the
// functions above accept; test/unit/openapi.test.ts runs both over the same corpus of bodies.
const nameSchema = (what: string): Schema => ({
  type: 'string',
  pattern: NAME.source,
  not: { pattern: '\\.\\.' },
  description: what,
});

const signalSchema: Schema = {
  oneOf: [
    {
      type: 'string',
      pattern: signalNamePattern(),
      description: 'a signal name, any case, with or without SIG: "SIGHUP", "hup", "SIGRTMIN+1"',
    },
    { type: 'integer', enum: SIGNAL_NUMBERS },
  ],
};

const sourceUrlSchema: Schema = {
  type: 'string',
  minLength: 1,
  maxLength: MAX_URL_LENGTH,
  format: 'uri',
  description: 'http(s) URL of the app archive (tar.gz, tar, zip), a blob URL of this agent, or file: with --allow-file-urls',
};

const envSchema: Schema = {
  type: ['object', 'null'],
  maxProperties: MAX_ENV,
  propertyNames: { pattern: ENV_NAME.source },
  additionalProperties: { type: 'string', description: 'no NUL; NAME=value at most 131072 bytes; 256 KiB in all' },
};

const readinessSchema: Schema = {
  type: ['object', 'null'],
  additionalProperties: false,
  required: ['port'],
  properties: { port: { type: 'boolean', description: 'ready once something in the process group accepts connections on $PORT' } },
  description: 'readiness check; web processes check $PORT by default',
};

export const createRequestSchema: Schema = {
  type: 'object',
  required: ['app', 'node', 'process_type', 'source_url'],
  properties: {
    app: nameSchema('the app: 1-64 letters, digits, "_", "-" or "." (not starting with one of those, no "..")'),
    node: nameSchema('the node within the app, e.g. "web.0"'),
    process_type: { type: 'string', pattern: TYPE_PATTERN.source, description: 'the Procfile entry to run' },
    source_url: sourceUrlSchema,
    env: envSchema,
    restart: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: {
        policy: { enum: [...RESTART_POLICIES] },
        delay_ms: { type: 'integer', minimum: 0, maximum: MAX_DELAY_MS },
        max_delay_ms: { type: 'integer', minimum: 0, maximum: MAX_DELAY_MS, description: 'not less than delay_ms' },
        reset_after_ms: { type: 'integer', minimum: 0, maximum: MAX_DELAY_MS },
      },
    },
    callback: {
      ...callbackSchema,
      description: 'POST its events (running, exited, failed, deleted by default) to this URL; see the README',
    },
    readiness: readinessSchema,
    env_from: {
      type: 'string',
      maxLength: 200,
      description: "slug of a process whose env this one starts from (the body's env is merged over it)",
    },
  },
};

/** The body of POST /replace-process: what is left out stays as it is. */
export const replaceRequestSchema: Schema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    source_url: { ...sourceUrlSchema, description: 'the new release; absent: the same source (rebuilt)' },
    env: { ...envSchema, description: 'the new env (replaces it, or merged over it with env_merge); absent: kept' },
    env_merge: { type: 'boolean', description: 'merge env over the current env instead of replacing it' },
    strategy: {
      enum: ['stop-first', 'start-first'],
      description:
        'stop-first (default): stop the old child, start the new one on the same $PORT; start-first: start the new one on a new port, stop the old one once the new one is ready',
    },
  },
};

export const signalRequestSchema: Schema = {
  type: 'object',
  required: ['signal'],
  additionalProperties: false,
  properties: { signal: signalSchema },
};

export const stopRequestSchema: Schema = {
  type: 'object',
  additionalProperties: false,
  properties: { signal: signalSchema, grace_ms: { type: 'integer', minimum: 0, maximum: MAX_GRACE_MS } },
};

export const emptyRequestSchema: Schema = { type: 'object', additionalProperties: false, maxProperties: 0 };
