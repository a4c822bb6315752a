// The agent's one access check. An agent that runs commands on request is a remote shell, so
// when a token is configured nothing reaches a route or a WebSocket endpoint without it:
//   - every HTTP request: the node handler given to listhen is wrapped (`gate.http`), so every
//     h3 route, present or added later, sits behind it;
//   - every WebSocket upgrade, on any path: `gate.install` intercepts the server's `upgrade`
//     event before any listener sees it, including listeners added later by other modules.
// A request that passes has its credentials removed (header, `token` query parameter, token
// subprotocol) so no handler can echo or log them.
import { createHash, timingSafeEqual } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorBody } from '../api/errors.js';
import { checkBrowser, type BrowserPolicy, type Refusal } from './browser.js';
import { refuseOnSocket } from './errors.js';
import { isDashboardAsset } from './ui.js';
import type { Access } from './route-table.js';

/** A browser WebSocket offers ['drover', 'drover.token.' + base64url(token)]; the agent answers 'drover'. */
export const SUBPROTOCOL = 'drover';
export const TOKEN_SUBPROTOCOL_PREFIX = 'drover.token.';

type NodeHandler = (req: IncomingMessage, res: ServerResponse) => unknown;
type Verdict = { ok: true } | { ok: false; status: 400 | 401; detail: string; invalid?: boolean };

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export interface Gate {
  /** Wraps the HTTP request handler. */
  http(handler: NodeHandler): NodeHandler;
  /** Puts every `upgrade` listener of `server`, present or future, behind the check. */
  install(server: Server): void;
}

/** Answers a refused HTTP request with a JSON error. */
function refuse(req: IncomingMessage, res: ServerResponse, status: number, detail: string, headers: Record<string, string> = {}): void {
  const id = req.headers['x-request-id'];
  const body = JSON.stringify(errorBody(status, detail));
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    ...headers,
    ...(typeof id === 'string' ? { 'x-request-id': id.slice(0, 200) } : {}),
  });
  res.end(body);
}

/**
 * The gate: the browser protections (browser.ts) for every request and upgrade, then, with a
 * token, the token check. Without a token (loopback-only use; see checkBinding) only the
 * browser protections apply.
 */
export interface GateOptions {
  /** A read-only token accepted on routes whose access is `metrics` (besides the agent token). */
  metricsToken?: string;
  /** Routes whose access is `health` ask for the token too (off: they answer anyone). */
  healthAuth?: boolean;
  /** Who may call a request, by the route table (route-table.ts). */
  accessOf?: (method: string, pathname: string) => Access;
}

export function createGate(token: string | undefined, browser?: Omit<BrowserPolicy, 'token'>, opts: GateOptions = {}): Gate {
  const policy: BrowserPolicy | null = browser ? { ...browser, token: Boolean(token) } : null;
  const browserRefusal = (req: IncomingMessage, upgrade: boolean): Refusal | null => (policy ? checkBrowser(req, policy, upgrade) : null);
  // Comparing fixed-size digests keeps the time independent of where (and whether) they differ, and of the length.
  const expected = token ? digest(token) : null;
  const matches = (candidate: string) => expected !== null && timingSafeEqual(digest(candidate), expected);
  const metricsExpected = opts.metricsToken ? digest(opts.metricsToken) : null;
  // Both compared every time, so the timing does not say which token was presented.
  const matchesForMetrics = (candidate: string) => {
    const d = digest(candidate);
    const a = expected !== null && timingSafeEqual(d, expected);
    const b = metricsExpected !== null && timingSafeEqual(d, metricsExpected);
    return a || b;
  };

  return {
    http: (handler) => (req, res) => {
      const refused = browserRefusal(req, false);
      if (refused) return refuse(req, res, refused.status, refused.detail);
      const access = opts.accessOf?.(req.method ?? 'GET', new URL(req.url ?? '/', 'http://agent').pathname) ?? 'token';
      if (access === 'health' && !opts.healthAuth) return handler(req, res);
      // The route checks its own password (POST /experiments), in place of the token.
      if (access === 'password') return handler(req, res);
      if (access === 'metrics' && metricsExpected) {
        const verdict = check(req, matchesForMetrics, false);
        if (verdict.ok) return handler(req, res);
        return refuse(req, res, verdict.status, verdict.detail, verdict.status === 401 ? { 'www-authenticate': challenge(verdict) } : {});
      }
      if (!token || isDashboardAsset(req.method, req.url)) return handler(req, res);
      const verdict = check(req, matches, acceptsQueryToken(req));
      if (verdict.ok) return handler(req, res);
      refuse(req, res, verdict.status, verdict.detail, verdict.status === 401 ? { 'www-authenticate': challenge(verdict) } : {});
    },
    install(server) {
      const emit = server.emit;
      // Node has no pre-listener hook for upgrades; intercepting emit is the one place every
      // listener (ours, listhen's, a later module's) is guaranteed to be behind.
      server.emit = function (this: Server, event: string | symbol, ...args: unknown[]): boolean {
        if (event === 'upgrade') {
          const [req, socket] = args as [IncomingMessage, Duplex];
          socket.on('error', () => {}); // a client vanishing mid-handshake is not the agent's problem
          const refused = browserRefusal(req, true);
          if (refused) {
            refuseOnSocket(socket, refused.status, refused.detail);
            return true;
          }
          const verdict: Verdict = token ? check(req, matches, true) : { ok: true };
          if (!verdict.ok) {
            refuseOnSocket(
              socket,
              verdict.status,
              verdict.detail,
              verdict.status === 401 ? { 'WWW-Authenticate': challenge(verdict) } : {},
            );
            return true;
          }
        }
        return Reflect.apply(emit, this, [event, ...args]) as boolean;
      } as Server['emit'];
    },
  };
}

function challenge(verdict: { invalid?: boolean }): string {
  return verdict.invalid ? 'Bearer realm="drover", error="invalid_token"' : 'Bearer realm="drover"';
}

/** The event streams: GET routes an EventSource opens (WebSockets are checked in `install`). */
const EVENT_STREAM_PATHS = [/^\/inspect$/, /^\/process-events\/[^/]+$/];

/**
 * Browsers cannot set headers on WebSockets or EventSource: those may carry the token in the
 * URL, and nothing else (a token in a URL ends up in logs and histories).
 */
function acceptsQueryToken(req: IncomingMessage): boolean {
  if (req.method !== 'GET' || !/\btext\/event-stream\b/i.test(req.headers.accept ?? '')) return false;
  const path = new URL(req.url ?? '/', 'http://agent').pathname;
  return EVENT_STREAM_PATHS.some((p) => p.test(path));
}

/** Checks every credential the request presents (all must match); strips them once they do. */
function check(req: IncomingMessage, matches: (candidate: string) => boolean, allowUrlAndProtocol: boolean): Verdict {
  const candidates: string[] = [];
  const auth = req.headers.authorization;
  if (auth !== undefined) {
    const m = /^Bearer +(\S+) *$/i.exec(auth);
    if (!m) return { ok: false, status: 401, detail: 'the Authorization header must be "Bearer <token>"', invalid: true };
    candidates.push(m[1]);
  }

  const url = new URL(req.url ?? '/', 'http://agent');
  const fromQuery = url.searchParams.getAll('token');
  if (fromQuery.length > 0) {
    if (!allowUrlAndProtocol) {
      return {
        ok: false,
        status: 401,
        detail: 'a token in the URL is only accepted on WebSocket and event-stream requests; send Authorization: Bearer <token>',
        invalid: true,
      };
    }
    candidates.push(...fromQuery);
  }

  let otherProtocols: string[] | null = null;
  const protocolHeader = req.headers['sec-websocket-protocol'];
  if (allowUrlAndProtocol && typeof protocolHeader === 'string') {
    const offered = protocolHeader
      .split(',')
      .map((p) => p.trim())
      .filter((p) => p !== '');
    const tokens = offered.filter((p) => p.startsWith(TOKEN_SUBPROTOCOL_PREFIX));
    if (tokens.length > 0) {
      for (const p of tokens) candidates.push(Buffer.from(p.slice(TOKEN_SUBPROTOCOL_PREFIX.length), 'base64url').toString('utf8'));
      otherProtocols = offered.filter((p) => !p.startsWith(TOKEN_SUBPROTOCOL_PREFIX));
    }
  }

  if (candidates.length === 0) {
    return { ok: false, status: 401, detail: 'authentication required: send Authorization: Bearer <token>' };
  }
  // Check them all, without stopping early, so the answer's timing says nothing about which one failed.
  let ok = true;
  for (const c of candidates) ok = matches(c) && ok;
  if (!ok) return { ok: false, status: 401, detail: 'invalid token', invalid: true };

  // The server must answer with a subprotocol the browser offered, and never with the token one.
  if (otherProtocols !== null && otherProtocols.length === 0) {
    return { ok: false, status: 400, detail: `a token subprotocol needs a subprotocol to answer with: also offer "${SUBPROTOCOL}"` };
  }
  delete req.headers.authorization;
  if (otherProtocols !== null) req.headers['sec-websocket-protocol'] = otherProtocols.join(', ');
  if (fromQuery.length > 0) {
    url.searchParams.delete('token');
    req.url = url.pathname + url.search;
  }
  return { ok: true };
}

/** True if every address `host` stands for is a loopback address. */
export async function isLoopback(host: string): Promise<boolean> {
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  let addresses: string[];
  if (isIP(bare)) addresses = [bare];
  else {
    try {
      addresses = (await lookup(bare, { all: true })).map((a) => a.address);
    } catch {
      return false; // listen() will report the bad name
    }
  }
  return addresses.length > 0 && addresses.every((a) => /^127\./.test(a) || a === '::1' || /^::ffff:127\./i.test(a));
}

/**
 * Without a token the agent is a remote shell for anyone who can reach it: that is only
 * acceptable on loopback, unless the operator says so explicitly (and is told loudly).
 * Returns an error message for a refused start, null otherwise.
 */
export async function checkBinding(
  host: string,
  hasToken: boolean,
  insecure: boolean,
  log: (line: string) => void,
): Promise<string | null> {
  if (hasToken || (await isLoopback(host))) return null;
  if (!insecure) {
    return (
      `refusing to listen on ${host} without a token: anyone who can reach it could run any command on this host. ` +
      'Set DROVER_TOKEN or --token-file FILE (e.g. from "openssl rand -hex 32"), listen on 127.0.0.1, or pass --insecure to accept the risk'
    );
  }
  log(
    `drover: WARNING: listening on ${host} WITHOUT A TOKEN (--insecure): anyone who can reach this port can run any command as this user`,
  );
  return null;
}
