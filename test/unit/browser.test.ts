// The browser protections' pure parts: Host names, origins, and their settings.
import t from 'tap';
import type { IncomingMessage } from 'node:http';
import { coerceSetting } from '../../lib/agent/config.js';
import { checkBrowser, hostName, namesAgent, normalizeOrigin, type BrowserPolicy } from '../../lib/http/browser.js';
import { serveUsage } from '../../lib/cli/serve.js';

const policy: BrowserPolicy = {
  token: false,
  boundHost: '127.0.0.1',
  allowedHosts: ['drover.lan', '*.agents.example'],
  allowedOrigins: ['https://dash.example.com'],
};
const req = (method: string, headers: Record<string, string>) => ({ method, headers }) as unknown as IncomingMessage;

t.test('Host names', async (t) => {
  t.equal(hostName('Example.COM.:8080'), 'example.com');
  t.equal(hostName('[::1]:8080'), '::1');
  t.equal(hostName('127.0.0.1'), '127.0.0.1');
  for (const ok of ['localhost', 'a.localhost', '127.0.0.1', '127.1.2.3', '::1', 'drover.lan', 'x.agents.example'])
    t.ok(namesAgent(ok, policy), ok);
  for (const bad of ['evil.example', 'localhost.evil.example', '127.0.0.1.nip.io', 'drover.lan.evil', 'agents.example', '10.0.0.1'])
    t.notOk(namesAgent(bad, policy), bad);
});

t.test('origins', async (t) => {
  t.equal(normalizeOrigin('HTTP://LocalHost:80'), 'http://localhost');
  t.equal(normalizeOrigin('null'), null);
  t.equal(normalizeOrigin('not a url'), null);
  const host = '127.0.0.1:8080';
  t.equal(checkBrowser(req('POST', { host, origin: 'http://127.0.0.1:8080' }), policy), null);
  t.equal(checkBrowser(req('POST', { host, origin: 'https://dash.example.com' }), policy), null);
  t.equal(checkBrowser(req('POST', { host }), policy), null, 'no Origin: not a browser');
  t.equal(checkBrowser(req('GET', { host, origin: 'http://evil.example' }), policy), null, 'reads are left to CORS');
  t.equal(checkBrowser(req('POST', { host, origin: 'http://evil.example' }), policy)?.status, 403);
  t.equal(checkBrowser(req('PATCH', { host, origin: 'http://127.0.0.1:8081' }), policy)?.status, 403, 'another port is another origin');
  t.equal(checkBrowser(req('DELETE', { host, 'sec-fetch-site': 'cross-site' }), policy)?.status, 403);
  t.equal(checkBrowser(req('GET', { host, origin: 'http://evil.example' }), policy, true)?.status, 403, 'upgrades');
  t.equal(checkBrowser(req('GET', { host: 'evil.example:8080' }), policy)?.status, 421);
  t.equal(checkBrowser(req('GET', { host: 'evil.example:8080' }), { ...policy, token: true }), null, 'no Host check with a token');
});

t.test('settings', async (t) => {
  t.same(coerceSetting('allowed_origins', 'https://Dash.example.com, http://localhost:3000/'), [
    'allowedOrigins',
    ['https://dash.example.com', 'http://localhost:3000'],
  ]);
  for (const bad of ['dash.example.com', 'https://dash.example.com/app', 'ftp://x.example', 'https://u:p@x.example'])
    t.throws(() => coerceSetting('allowed_origins', bad), /is not an origin/, bad);
  t.same(coerceSetting('allowed_hosts', 'Drover.lan,*.agents.example'), ['allowedHosts', ['drover.lan', '*.agents.example']]);
  t.throws(() => coerceSetting('allowed_hosts', 'http://x'), /is not a host name/);
  t.match(serveUsage, /--allowed-origins/);
  t.match(serveUsage, /--allowed-hosts/);
});
