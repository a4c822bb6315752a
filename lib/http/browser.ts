// What keeps a web page the user visits from using an agent on the same machine.
//   - Cross-site requests: a page can POST to http://127.0.0.1:8080 without a preflight
//     (text/plain, a form). State-changing requests and WebSocket upgrades whose Origin is not
//     the agent's own (or one of --allowed-origins), or that say `Sec-Fetch-Site: cross-site`,
//     get 403. Clients that send no Origin (curl, scripts) are not browsers and pass.
//   - DNS rebinding: a page at http://evil.example:8080 whose name is rebound to 127.0.0.1 is
//     same-origin to the browser, so it could read every answer. Without a token (which such a
//     page cannot know), only Host values that name this agent are served, else 421.
// Neither depends on the body's Content-Type.
import { hostname as osHostname, networkInterfaces } from 'node:os';
import { isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';

export interface BrowserPolicy {
  /** A token is required: the Host check is then unneeded (a rebound page cannot present it). */
  token: boolean;
  /** The address the agent listens on. */
  boundHost: string;
  /** Further names the agent may be reached by (exact, or "*.domain"). */
  allowedHosts: readonly string[];
  /** Further origins allowed to change state ("https://dash.example.com"). */
  allowedOrigins: readonly string[];
}

export interface Refusal {
  status: 403 | 421;
  detail: string;
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'DELETE', 'PATCH']);

/** "Host: [::1]:8080" → "::1", "Example.COM." → "example.com"; null when there is no usable name. */
export function hostName(host: string | undefined): string | null {
  if (host === undefined) return null;
  const h = host.trim().toLowerCase();
  const v6 = /^\[([^\]]*)\](?::\d*)?$/.exec(h);
  if (v6) return v6[1];
  return h.replace(/:\d*$/, '').replace(/\.$/, '');
}

function isLoopbackAddress(ip: string): boolean {
  return /^127\./.test(ip) || ip === '::1' || /^::ffff:127\./.test(ip);
}

const isWildcard = (h: string) => h === '0.0.0.0' || h === '::' || h === '';

function matchesName(name: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => (p.startsWith('*.') ? name.endsWith(p.slice(1)) : name === p.replace(/^\[(.*)\]$/, '$1')));
}

/** Whether `name` (from the Host header) names this agent. */
export function namesAgent(name: string, policy: BrowserPolicy): boolean {
  const bound = policy.boundHost.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  // RFC 6761: localhost and *.localhost are loopback, and browsers never ask DNS for them.
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  if (name === bound || name === osHostname().toLowerCase()) return true;
  if (isIP(name)) {
    if (isLoopbackAddress(name)) return true;
    // Listening on every address: any of this host's own addresses names it.
    if (isWildcard(bound)) return Object.values(networkInterfaces()).some((l) => l?.some((a) => a.address.toLowerCase() === name));
  }
  return matchesName(name, policy.allowedHosts);
}

/** "http://HOST" and "https://HOST" for the request's own Host, normalized like an Origin header. */
function ownOrigins(host: string | undefined): string[] {
  if (!host) return [];
  const out: string[] = [];
  for (const scheme of ['http', 'https']) {
    try {
      out.push(new URL(`${scheme}://${host}`).origin);
    } catch {
      // a Host that is no URL authority has no origin
    }
  }
  return out;
}

/** Normalizes an origin as browsers send it ("http://Example.com:80" → "http://example.com"). */
export function normalizeOrigin(origin: string): string | null {
  try {
    const u = new URL(origin);
    return u.origin === 'null' ? null : u.origin;
  } catch {
    return null;
  }
}

/** Why the request must be refused, or null. `upgrade`: a WebSocket handshake (a GET that opens a channel). */
export function checkBrowser(req: IncomingMessage, policy: BrowserPolicy, upgrade = false): Refusal | null {
  const host = req.headers.host;
  if (!policy.token && host !== undefined) {
    const name = hostName(host);
    if (name === null || !namesAgent(name, policy)) {
      // The refused name is not repeated: nothing the agent sends may carry it.
      return {
        status: 421,
        detail:
          'the Host header does not name this agent (DNS rebinding protection): use 127.0.0.1 or localhost, ' +
          'or add the name with --allowed-hosts (or set a token)',
      };
    }
  }
  if (!upgrade && !STATE_CHANGING.has(req.method ?? '')) return null;
  const origin = req.headers.origin;
  if (origin !== undefined) {
    const o = normalizeOrigin(origin);
    if (o !== null && (ownOrigins(host).includes(o) || policy.allowedOrigins.includes(o))) return null;
    return {
      status: 403,
      detail: 'cross-origin request refused: the Origin is not this agent nor one of --allowed-origins',
    };
  }
  if (String(req.headers['sec-fetch-site'] ?? '').toLowerCase() === 'cross-site') {
    return { status: 403, detail: 'cross-site request refused (Sec-Fetch-Site: cross-site)' };
  }
  return null;
}
