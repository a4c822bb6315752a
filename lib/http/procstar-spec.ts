// Procstar's SPEC (its src/spec.rs, `deny_unknown_fields`): parsed into drover's argv spec.
// Every error names where in the body it is ("specs.proc1.fds[0][1].file.path: …").
import { MAX_FD, OPEN_FLAGS, parseFdName, fdName, type FdEntry, type FdSpec, type OpenFlag } from '../os/fds.js';
import type { ArgvSpec, ProcEnv } from '../release/launch.js';

export class SpecError extends Error {}

export interface SpecOptions {
  /** Whether a proc may name a `user` (drover's extension): the agent runs as root. */
  canSwitchUser: boolean;
  /** The agent's --user, if any: then a proc may only name that one. */
  agentUser?: string;
}

// Bounds against hostile bodies; far above what a scheduler sends.
const MAX_PROCS = 1000;
const MAX_ARGV = 10_000;
const MAX_VARS = 1000;

type Obj = Record<string, unknown>;

function fail(at: string, problem: string): never {
  throw new SpecError(`${at}: ${problem}`);
}

function kind(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function object(v: unknown, at: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(at, `must be an object, got ${kind(v)}`);
  return v as Obj;
}

function onlyFields(o: Obj, at: string, allowed: readonly string[]): void {
  for (const k of Object.keys(o))
    if (!allowed.includes(k)) fail(at, `unknown field ${JSON.stringify(k)}, expected one of ${allowed.join(', ')}`);
}

function string(v: unknown, at: string): string {
  if (typeof v !== 'string') fail(at, `must be a string, got ${kind(v)}`);
  if (v.includes('\0')) fail(at, 'must not contain NUL');
  return v;
}

/** `{"specs": {ID: SPEC, …}}` into argv specs by id, in the body's order. */
export function parseProcsBody(body: unknown, opts: SpecOptions): Map<string, ArgvSpec> {
  const b = object(body, 'body');
  onlyFields(b, 'body', ['specs']);
  if (!('specs' in b)) fail('body', 'missing field "specs"');
  const specs = object(b.specs, 'specs');
  const ids = Object.keys(specs);
  if (ids.length > MAX_PROCS) fail('specs', `more than ${MAX_PROCS} procs in one request`);
  const out = new Map<string, ArgvSpec>();
  for (const id of ids) {
    if (id === '') fail('specs', 'a proc id must not be empty');
    if (id.length > 1000) fail('specs', 'a proc id must be at most 1000 characters');
    out.set(id, parseSpec(specs[id], `specs.${id}`, opts));
  }
  return out;
}

/** One SPEC: argv (required), exe, env, fds, id; drover's cwd and user. */
export function parseSpec(v: unknown, at: string, opts: SpecOptions): ArgvSpec {
  const s = object(v, at);
  onlyFields(s, at, ['id', 'exe', 'argv', 'env', 'fds', 'systemd_properties', 'cwd', 'user']);
  if (s.id !== undefined && s.id !== null) string(s.id, `${at}.id`);
  if (s.systemd_properties !== undefined && s.systemd_properties !== null) {
    const p = s.systemd_properties;
    const empty = typeof p === 'object' && p !== null && Object.keys(p).length === 0;
    if (!empty) fail(`${at}.systemd_properties`, 'systemd units are not supported by drover (it measures runs with its own cgroups)');
  }
  if (s.argv === undefined || s.argv === null) fail(`${at}.argv`, 'is required');
  if (!Array.isArray(s.argv)) fail(`${at}.argv`, `must be an array of strings, got ${kind(s.argv)}`);
  if (s.argv.length === 0) fail(`${at}.argv`, 'must not be empty: argv[0] is the program');
  if (s.argv.length > MAX_ARGV) fail(`${at}.argv`, `must have at most ${MAX_ARGV} arguments`);
  const argv = s.argv.map((a, i) => string(a, `${at}.argv[${i}]`));
  if (argv[0] === '' && (s.exe === undefined || s.exe === null)) fail(`${at}.argv[0]`, 'must not be empty');
  const spec: ArgvSpec = { kind: 'argv', argv, environ: parseEnv(s.env, `${at}.env`), fds: parseFds(s.fds, `${at}.fds`) };
  if (s.exe !== undefined && s.exe !== null) {
    spec.exe = string(s.exe, `${at}.exe`);
    if (spec.exe === '') fail(`${at}.exe`, 'must not be empty');
  }
  if (s.cwd !== undefined && s.cwd !== null) {
    spec.cwd = string(s.cwd, `${at}.cwd`);
    if (spec.cwd === '') fail(`${at}.cwd`, 'must not be empty');
  }
  if (s.user !== undefined && s.user !== null) {
    const user = string(s.user, `${at}.user`);
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(user)) fail(`${at}.user`, `${JSON.stringify(user.slice(0, 64))} is not a user name`);
    if (opts.agentUser !== undefined && user !== opts.agentUser)
      fail(`${at}.user`, `this agent runs children only as --user ${opts.agentUser}`);
    else if (opts.agentUser === undefined && !opts.canSwitchUser) fail(`${at}.user`, 'needs the agent to run as root');
    spec.user = user;
  }
  return spec;
}

/** `env`: {"inherit": true | false | [names], "vars": {name: string | null}}; both default like Procstar (inherit all, no vars). */
export function parseEnv(v: unknown, at: string): ProcEnv {
  if (v === undefined || v === null) return { inherit: true, vars: {} };
  const e = object(v, at);
  onlyFields(e, at, ['inherit', 'vars']);
  let inherit: ProcEnv['inherit'] = true;
  if (e.inherit !== undefined) {
    if (typeof e.inherit === 'boolean') inherit = e.inherit;
    else if (Array.isArray(e.inherit)) inherit = e.inherit.map((n, i) => envName(n, `${at}.inherit[${i}]`));
    else fail(`${at}.inherit`, `must be true, false or a list of variable names, got ${kind(e.inherit)}`);
  }
  const vars: ProcEnv['vars'] = {};
  if (e.vars !== undefined && e.vars !== null) {
    const o = object(e.vars, `${at}.vars`);
    const names = Object.keys(o);
    if (names.length > MAX_VARS) fail(`${at}.vars`, `must have at most ${MAX_VARS} variables`);
    for (const name of names) {
      envName(name, `${at}.vars`);
      vars[name] = o[name] === null ? null : string(o[name], `${at}.vars.${name}`);
    }
  }
  return { inherit, vars };
}

function envName(v: unknown, at: string): string {
  const name = string(v, at);
  if (name === '' || name.includes('=')) fail(at, `${JSON.stringify(name.slice(0, 64))} is not a variable name`);
  return name;
}

/** `fds`: [[name, fdspec], …]. */
export function parseFds(v: unknown, at: string): FdEntry[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail(at, `must be a list of [fd, spec] pairs, got ${kind(v)}`);
  const out: FdEntry[] = [];
  v.forEach((pair, i) => {
    const here = `${at}[${i}]`;
    if (!Array.isArray(pair) || pair.length !== 2) fail(here, 'must be a pair [fd, spec]');
    const [rawName, rawSpec] = pair;
    const name = typeof rawName === 'number' && Number.isInteger(rawName) ? String(rawName) : string(rawName, `${here}[0]`);
    const fd = parseFdName(name);
    if (fd === null) fail(`${here}[0]`, `${JSON.stringify(name.slice(0, 64))} is not an fd (stdin, stdout, stderr or a number)`);
    if (fd > MAX_FD) fail(`${here}[0]`, `fd ${fd} is not supported: drover sets up fds 0 to ${MAX_FD}`);
    if (out.some((e) => e.fd === fd)) fail(`${here}[0]`, `fd ${fd} appears twice`);
    out.push({ fd, name: fdName(fd), spec: parseFdSpec(rawSpec, `${here}[1]`, fd) });
  });
  return out;
}

function flags(v: unknown, at: string): OpenFlag {
  if (v === undefined || v === null) return 'Default';
  if (typeof v !== 'string' || !OPEN_FLAGS.includes(v as OpenFlag))
    fail(at, `must be one of ${OPEN_FLAGS.join(', ')}, got ${JSON.stringify(v)}`);
  return v as OpenFlag;
}

/** One fdspec: "inherit", "close", {"null"}, {"file"}, {"dup"}, {"capture"}; pipes are refused. */
export function parseFdSpec(v: unknown, at: string, fd: number): FdSpec {
  let tag: string;
  let body: unknown = null;
  if (typeof v === 'string') tag = v;
  else {
    const o = object(v, at);
    const keys = Object.keys(o);
    if (keys.length !== 1) fail(at, 'must be a string or an object with exactly one key');
    tag = keys[0];
    body = o[tag];
  }
  const fields = (allowed: string[]): Obj => {
    if (body === null || body === undefined) return {};
    const o = object(body, `${at}.${tag}`);
    onlyFields(o, `${at}.${tag}`, allowed);
    return o;
  };
  switch (tag) {
    case 'inherit':
    case 'close':
      fields([]);
      return { type: tag };
    case 'null':
      return { type: 'null', flags: flags(fields(['flags']).flags, `${at}.null.flags`) };
    case 'file': {
      if (typeof v === 'string') fail(at, '"file" needs {"path"}');
      const o = fields(['path', 'flags', 'mode']);
      if (o.path === undefined) fail(`${at}.file.path`, 'is required');
      const path = string(o.path, `${at}.file.path`);
      if (path === '') fail(`${at}.file.path`, 'must not be empty');
      let mode = 0o666;
      if (o.mode !== undefined && o.mode !== null) {
        if (typeof o.mode !== 'number' || !Number.isInteger(o.mode) || o.mode < 0 || o.mode > 0o7777)
          fail(`${at}.file.mode`, 'must be a file mode from 0 to 4095 (0o7777)');
        mode = o.mode;
      }
      return { type: 'file', path, flags: flags(o.flags, `${at}.file.flags`), mode };
    }
    case 'dup': {
      if (typeof v === 'string') fail(at, '"dup" needs {"fd"}');
      const o = fields(['fd']);
      const src = o.fd;
      const n = typeof src === 'string' ? parseFdName(src) : typeof src === 'number' && Number.isInteger(src) ? src : null;
      if (n === null || n < 0) fail(`${at}.dup.fd`, `must be an fd number, got ${JSON.stringify(src)}`);
      if (n > MAX_FD) fail(`${at}.dup.fd`, `fd ${n} is not supported: drover sets up fds 0 to ${MAX_FD}`);
      if (n === fd) fail(`${at}.dup.fd`, 'an fd cannot be a duplicate of itself');
      return { type: 'dup', fd: n };
    }
    case 'capture': {
      const o = fields(['mode', 'encoding', 'attached', 'format']);
      let mode: 'memory' | 'tempfile' = 'tempfile';
      if (o.mode !== undefined && o.mode !== null) {
        if (o.mode !== 'memory' && o.mode !== 'tempfile')
          fail(`${at}.capture.mode`, `must be "memory" or "tempfile", got ${JSON.stringify(o.mode)}`);
        mode = o.mode;
      }
      let encoding: 'utf-8' | null = 'utf-8';
      // Procstar's older clients say `format`: "text" or "base64".
      if (o.format !== undefined && o.format !== null) {
        if (o.format !== 'text' && o.format !== 'base64')
          fail(`${at}.capture.format`, `must be "text" or "base64", got ${JSON.stringify(o.format)}`);
        encoding = o.format === 'text' ? 'utf-8' : null;
      }
      if ('encoding' in o) {
        if (o.encoding !== null && o.encoding !== 'utf-8')
          fail(`${at}.capture.encoding`, `must be "utf-8" or null, got ${JSON.stringify(o.encoding)}`);
        encoding = o.encoding;
      }
      let attached = true;
      if (o.attached !== undefined && o.attached !== null) {
        if (typeof o.attached !== 'boolean') fail(`${at}.capture.attached`, `must be true or false, got ${kind(o.attached)}`);
        attached = o.attached;
      }
      return { type: 'capture', mode, encoding, attached };
    }
    case 'pipe-write':
    case 'pipe-read':
      fail(at, `"${tag}" (pipes between procs) is not supported by drover`);
    // falls through: fail never returns
    default:
      fail(at, `unknown fd spec ${JSON.stringify(tag.slice(0, 64))}, expected inherit, close, null, file, dup or capture`);
  }
}
