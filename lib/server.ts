import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { toNodeHandler } from 'h3/node';
import { listen } from 'listhen';
import type { Config } from './config.js';
import { createAttachHandler } from './http/attach.js';
import { createRoutes } from './http/routes.js';
import { Supervisor } from './process/supervisor.js';
import { ReleaseCache } from './release/cache.js';

export interface Agent {
  url: string;
  port: number;
  supervisor: Supervisor;
  /** Stops accepting, stops every process gracefully, closes the server. */
  close(): Promise<void>;
  /** SIGKILLs every child's group at once (second Ctrl-C). */
  kill(): void;
}

export class StartError extends Error {}

export async function startAgent(config: Config, log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<Agent> {
  try {
    await mkdir(join(config.stateDir, 'releases'), { recursive: true });
  } catch (err) {
    throw new StartError(`state directory ${config.stateDir} is not usable: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  const releases = new ReleaseCache({
    dir: config.stateDir,
    download: { timeoutMs: config.downloadTimeoutMs, maxBytes: config.downloadMaxBytes },
    unpack: { maxBytes: config.unpackMaxBytes, maxEntries: config.unpackMaxEntries },
  });
  const supervisor = new Supervisor(config, releases, log);
  const app = createRoutes({ supervisor, config, log });
  const attach = createAttachHandler({ supervisor, maxBufferedBytes: config.clientMaxBufferedBytes });

  let listener;
  try {
    listener = await listen(toNodeHandler(app), {
      hostname: config.host,
      // No fallback port: a busy port must be an error, not a silent move elsewhere.
      port: { port: config.port, random: config.port === 0, ports: [], portRange: [], alternativePortRange: [], verbose: false } as never,
      autoClose: false, // we own SIGINT/SIGTERM: listhen's handlers exit at once and orphan children
      showURL: false,
      qr: false,
      public: false,
      isProd: true,
    });
  } catch (err) {
    const msg = (err as Error).message;
    if (/Unable to find an available port|EADDRINUSE/.test(msg)) throw new StartError(`port ${config.port} on ${config.host} is already in use`);
    throw new StartError(`cannot listen on ${config.host}:${config.port}: ${msg}`);
  }
  const server = listener.server as Server;
  server.on('upgrade', attach.handle);
  const port = listener.address.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;

  let closing: Promise<void> | null = null;
  return {
    url: `http://${host}:${port}`,
    port,
    supervisor,
    close() {
      closing ??= (async () => {
        server.close(); // stop accepting; requests in flight finish
        attach.close();
        await supervisor.shutdown();
        server.closeAllConnections();
        await listener.close().catch(() => {});
      })();
      return closing;
    },
    kill() {
      supervisor.killAll();
    },
  };
}
