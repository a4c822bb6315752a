import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { defaults, type Config } from '../../lib/agent/config.js';
import { startAgent, type Agent } from '../../lib/http/server.js';
import { ArchiveServer, pack, writeApp } from './archives.js';
import { waitFor } from './wait.js';

/** An in-process agent on an ephemeral loopback port with its own state directory. */
export async function testAgent(overrides: Partial<Config> = {}): Promise<Agent & { stateDir: string; logs: string[] }> {
  const stateDir = mkdtempSync(join(tmpdir(), 'drover-test-'));
  const logs: string[] = [];
  const agent = await startAgent(
    { ...defaults, host: '127.0.0.1', port: 0, stateDir, stopGraceMs: 3000, backoffInitialMs: 200, backoffMaxMs: 1000, ...overrides },
    (l) => logs.push(l),
  );
  const close = agent.close.bind(agent);
  return Object.assign(agent, {
    stateDir,
    logs,
    close: async () => {
      await close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  });
}

/**
 * An in-process agent plus a loopback archive server, both closed when the test ends;
 * `serveApp` packs a one-Procfile app and returns its source URL.
 */
export async function agentWithArchives(t: { teardown(fn: () => unknown): void; testdir(): string }, overrides: Partial<Config> = {}) {
  const agent = await testAgent(overrides);
  const archives = await new ArchiveServer().start();
  t.teardown(async () => {
    await agent.close();
    await archives.close();
  });
  const dir = t.testdir();
  const serveApp = async (name: string, procfile: string) =>
    archives.serve(`${name}.tgz`, await pack(writeApp(join(dir, name), { Procfile: procfile }), join(dir, `${name}.tgz`)));
  return { agent, archives, dir, serveApp };
}

export async function api(method: string, url: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

/** Polls the status URL until the process is in `state`. */
export async function waitForState(
  statusUrl: string,
  state: string | ((doc: any) => boolean),
  timeoutMs = 60_000,
  headers: Record<string, string> = {},
) {
  const ok = typeof state === 'string' ? (d: any) => d.state === state : state;
  return waitFor(
    async () => {
      const r = await api('GET', statusUrl, undefined, headers);
      return r.status === 200 && ok(r.json) ? r.json : null;
    },
    `process at ${statusUrl} to reach ${typeof state === 'string' ? state : 'the expected state'}`,
    timeoutMs,
  );
}

/** A WebSocket client that records every frame it receives. */
export async function attach(url: string): Promise<{ ws: WebSocket; lines: string[]; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(url);
  const lines: string[] = [];
  ws.on('message', (data) => lines.push(data.toString()));
  const closed = new Promise<{ code: number; reason: string }>((r) =>
    ws.on('close', (code, reason) => r({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return { ws, lines, closed };
}
