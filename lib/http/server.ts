import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { toNodeHandler } from 'h3/node';
import { listen } from 'listhen';
import type { Config } from '../agent/config.js';
import { createAttachHandler } from './attach.js';
import { checkBinding, createGate } from './auth.js';
import type { Duplex } from 'node:stream';
import { answerClientError, refuseOnSocket } from './errors.js';
import { createInspectUpgrade, INSPECT_PATH } from './inspect.js';
import { createRoutes } from './routes.js';
import { withRequestIds } from './request-id.js';
import { dispatchUpgrades } from './upgrade.js';
import { canReach, IdentityError, resolveUser, type RunAs } from '../os/identity.js';
import { forwardToStately } from '../agent/stately.js';
import { Supervisor } from '../agent/supervisor.js';
import { Runs } from '../agent/runs.js';
import { Callbacks } from '../agent/callbacks.js';
import { Outbox } from '../store/outbox.js';
import { ReleaseCache } from '../release/cache.js';
import { BlobStore, blobIdFromUrl } from '../store/blobs.js';
import { sweepStaleGroups } from '../store/groups.js';
import { Store, StoreOpenError } from '../store/store.js';

export interface Agent {
  url: string;
  port: number;
  supervisor: Supervisor;
  /** The run-to-completion jobs (POST /runs). */
  runs: Runs;
  /** Stops accepting, stops every process gracefully, closes the server. */
  close(): Promise<void>;
  /** SIGKILLs every child's group at once (second Ctrl-C). */
  kill(): void;
}

export class StartError extends Error {}

export async function startAgent(config: Config, log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<Agent> {
  const refused = await checkBinding(config.host, Boolean(config.token), config.insecure, log);
  if (refused) throw new StartError(refused);
  let store: Store;
  try {
    store = await Store.open({
      dir: config.stateDir,
      eventsMaxBytes: config.eventsMaxBytes,
      eventsRetentionMs: config.eventsRetentionMs,
      warn: log,
    });
    await mkdir(join(config.stateDir, 'releases'), { recursive: true });
  } catch (err) {
    if (err instanceof StoreOpenError) throw new StartError(err.message);
    throw new StartError(`state directory ${config.stateDir} is not usable: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let blobs: BlobStore;
  let supervisor: Supervisor;
  let runs: Runs;
  let callbacks: Callbacks;
  let stopCallbacks = () => {};
  let runAs: RunAs | undefined;
  try {
    blobs = new BlobStore({
      dir: join(config.stateDir, 'blobs'),
      maxBytes: config.blobMaxBytes,
      retentionMs: config.blobRetentionMs,
      referenced: (): Set<string> =>
        new Set(
          supervisor
            .list()
            .map((p) => p.sourceUrl && blobIdFromUrl(p.sourceUrl))
            .filter((id): id is string => !!id),
        ),
      log,
    });
    await blobs.init();
    runAs = runAsUser(config);
    // Whatever a previous agent that died hard left running goes before anything is restored.
    const swept = await sweepStaleGroups(store.previousGroups);
    if (swept.length) log(`drover: killed ${swept.length} process group(s) left behind by a previous agent`);
    const releases: ReleaseCache = new ReleaseCache({
      dir: config.stateDir,
      download: {
        timeoutMs: config.downloadTimeoutMs,
        maxBytes: config.downloadMaxBytes,
        allowedHosts: config.sourceHosts,
        maxRedirects: config.downloadMaxRedirects,
        connectTimeoutMs: config.downloadConnectTimeoutMs,
        readTimeoutMs: config.downloadReadTimeoutMs,
      },
      unpack: { maxBytes: config.unpackMaxBytes, maxEntries: config.unpackMaxEntries, maxRatio: config.unpackMaxRatio },
      runAs,
      // A blob URL names its bytes by their sha256: when we hold them, read them from disk. This
      // also keeps source_urls pointing at this agent working when it requires a token.
      localSource: async (url): Promise<string | null> => {
        const id = blobIdFromUrl(url);
        return id && (await blobs.get(id)) ? blobs.path(id) : null;
      },
      track: (pgid) => {
        store.groups.add(pgid, '', 'build');
        return () => store.groups.remove(pgid);
      },
    });
    await releases.init();
    supervisor = new Supervisor(config, releases, store, log, runAs);
    runs = new Runs(supervisor, store.events, {
      dir: join(config.stateDir, 'runs'),
      ttlMs: config.runTtlMs,
      unstartedTtlMs: config.runUnstartedTtlMs,
      retentionMs: config.eventsRetentionMs,
      stopGraceMs: config.stopGraceMs,
      maxConcurrentRuns: config.maxConcurrentRuns,
      adminReservedRuns: config.adminReservedRuns,
      unpack: { maxBytes: config.unpackMaxBytes, maxEntries: config.unpackMaxEntries, maxRatio: config.unpackMaxRatio },
      log,
    });
    await runs.init();
    callbacks = new Callbacks(new Outbox(join(config.stateDir, 'callbacks', 'outbox.ndjson')), runs, {
      secret: config.callbackSecret,
      timeoutMs: config.callbackTimeoutMs,
      backoffMs: config.callbackBackoffMs.split(',').map((x) => Number(x.trim())),
      log,
    });
    stopCallbacks = callbacks.start();
    const desired = store.desired.all();
    for (const record of desired) {
      await supervisor.restore(record).catch((err) => log(`drover: cannot restore ${record.slug}: ${(err as Error).message}`));
    }
    if (desired.length) log(`drover: restored ${desired.length} process(es) from ${config.stateDir}`);
    await store.events.recover(new Set(desired.map((r) => r.slug)));
  } catch (err) {
    await store.close(); // releases the state directory for the next try
    throw err;
  }
  const gate = createGate(config.token, {
    boundHost: config.host,
    allowedHosts: config.allowedHosts,
    allowedOrigins: config.allowedOrigins,
  });
  const app = createRoutes({ supervisor, runs, config, log, blobs });
  const attach = createAttachHandler({ supervisor, maxBufferedBytes: config.clientMaxBufferedBytes });
  const inspect = createInspectUpgrade(supervisor.inspection);

  let listener;
  try {
    listener = await listen(withRequestIds(gate.http(toNodeHandler(app))), {
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
    // Restored processes stop again (and stay in the desired state for the next try).
    await runs.shutdown();
    stopCallbacks();
    callbacks.close();
    await supervisor.shutdown();
    await store.close();
    const msg = (err as Error).message;
    if (/Unable to find an available port|EADDRINUSE/.test(msg))
      throw new StartError(`port ${config.port} on ${config.host} is already in use`);
    throw new StartError(`cannot listen on ${config.host}:${config.port}: ${msg}`);
  }
  blobs.startSweeping();
  const server = listener.server as Server;
  // Until there is an upgrade listener Node hands upgrades to the (gated) request handler; from here on
  // the gate intercepts them ahead of every listener.
  gate.install(server);
  server.on('upgrade', dispatchUpgrades({ [INSPECT_PATH]: inspect.handle }, attach.handle));
  server.on('clientError', answerClientError);
  // Node answers CONNECT through this event, never the request handler: without it the socket is closed silently.
  server.on('connect', (_req, socket: Duplex) => {
    socket.on('error', () => {});
    refuseOnSocket(socket, 405, 'method CONNECT is not allowed: drover is no proxy', { Allow: 'GET, POST' });
  });
  if (!runAs && process.getuid?.() === 0)
    log(
      'drover: warning: running as root without --user: every process and build step runs as root and can read the token ' +
        "and every process's environment (the state directory); run with --user NAME",
    );
  // Only when asked, and once listening: the connection to an external inspector must cost nothing otherwise.
  const stately = config.inspectUrl ? forwardToStately(config.inspectUrl, { log }) : undefined;
  if (stately) supervisor.inspection.forwardRaw(stately.inspect);
  const port = listener.address.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;

  let closing: Promise<void> | null = null;
  return {
    url: `http://${host}:${port}`,
    port,
    supervisor,
    runs,
    close() {
      closing ??= (async () => {
        server.close(); // stop accepting; requests in flight finish
        attach.close();
        await runs.shutdown();
        stopCallbacks();
        callbacks.close();
        await supervisor.shutdown();
        await blobs.close();
        await store.close();
        supervisor.inspection.close(); // after the shutdown, so watchers see every process reach `deleted`
        await new Promise((r) => setImmediate(r)); // let the event streams write those last records
        inspect.close();
        stately?.stop();
        server.closeAllConnections();
        await listener.close().catch(() => {});
      })();
      return closing;
    },
    kill() {
      stately?.stop();
      supervisor.killAll();
    },
  };
}

/** The user children run as (--user, when the agent runs as root). */
function runAsUser(config: Config): RunAs | undefined {
  if (!config.user) return undefined;
  const root = process.getuid?.() === 0;
  let runAs: RunAs;
  try {
    runAs = resolveUser(config.user);
  } catch (err) {
    if (err instanceof IdentityError) throw new StartError(err.message);
    throw err;
  }
  if (!root) {
    if (runAs.uid === process.getuid?.()) return undefined; // already that user: nothing to switch
    throw new StartError(`--user ${config.user} needs the agent to run as root`);
  }
  const releases = join(config.stateDir, 'releases');
  if (!canReach(runAs, releases)) {
    throw new StartError(
      `--user ${runAs.name} cannot reach ${releases}: every directory above it needs search (x) permission for that user, or choose another --state-dir`,
    );
  }
  return runAs;
}
