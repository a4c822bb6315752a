import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { toNodeHandler } from 'h3/node';
import { listen } from 'listhen';
import type { Config } from '../agent/config.js';
import { attachWebSocket, createAttachHandler, refuseUpgrade } from './attach.js';
import type { H3 } from 'h3';
import type { IncomingMessage } from 'node:http';
import type { Registry } from '../os/prometheus.js';
import { healthRoutes } from './health.js';
import { callbackMetrics, createAgentMetrics, metricsRoute, runQueueMetrics } from './metrics.js';
import type { RouteTable } from './route-table.js';
import { checkBinding, createGate } from './auth.js';
import type { Duplex } from 'node:stream';
import { answerClientError, refuseOnSocket } from './errors.js';
import { createInspectUpgrade, inspectWebSocket } from './inspect.js';
import { createRoutes } from './routes.js';
import { withRequestIds } from './request-id.js';
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
import { JobBoard } from '../agent/pleiades.js';
import { openPleiadesJournal } from '../store/pleiades.js';
import type { Journal } from '../store/journal.js';
import type { PleiadesRecord } from '../store/pleiades.js';
import type { DesiredProcess } from '../store/desired.js';

export interface Agent {
  url: string;
  port: number;
  supervisor: Supervisor;
  /** The run-to-completion jobs (POST /runs). */
  runs: Runs;
  /** The agent's blob store (the bytes behind /data and /api/v0.5/data). */
  blobs: BlobStore;
  /** Stops accepting, stops every process gracefully, closes the server. */
  close(): Promise<void>;
  /** SIGKILLs every child's group at once (second Ctrl-C). */
  kill(): void;
  /** Every route and WebSocket endpoint served (the source of GET /openapi.json); absent without HTTP. */
  routes?: RouteTable;
  /** The h3 app the routes are registered on; absent without HTTP. */
  app?: H3;
  /** The /metrics registry: a feature registers its own series here in one line (see lib/os/prometheus.ts); absent without HTTP. */
  metrics?: Registry;
}

export class StartError extends Error {}

export interface StartOptions {
  /** Listen for HTTP (default); false runs the supervisor alone (`drover worker` without --serve). */
  listen?: boolean;
  /** Saved processes to forget instead of restoring (a worker's jobs: the server re-queues them). */
  forget?: (record: DesiredProcess) => boolean;
}

export async function startAgent(
  config: Config,
  log: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
  opts: StartOptions = {},
): Promise<Agent> {
  const metrics = createAgentMetrics();
  let phase: 'starting' | 'serving' | 'stopping' = 'starting';
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
  let journal: Journal<PleiadesRecord> | undefined;
  let board: JobBoard | undefined;
  let callbacks: Callbacks;
  let stopCallbacks = () => {};
  let runAs: RunAs | undefined;
  try {
    blobs = new BlobStore({
      dir: join(config.stateDir, 'blobs'),
      maxBytes: config.blobMaxBytes,
      retentionMs: config.blobRetentionMs,
      referenced: (): Set<string> =>
        new Set([
          ...supervisor
            .list()
            .map((p) => p.sourceUrl && blobIdFromUrl(p.sourceUrl))
            .filter((id): id is string => !!id),
          ...(board?.referencedData() ?? []),
        ]),
      log,
    });
    await blobs.init();
    journal = await openPleiadesJournal(config.stateDir, log);
    board = new JobBoard(journal, {
      leaseMs: config.jobLeaseMs,
      maxWaitMs: config.jobPollMaxMs,
      dataExists: async (id) => (await blobs.get(id)) !== null,
      log,
    });
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
      observe: metrics.stage,
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
      trackGroup: (pgid, slug) => {
        store.groups.add(pgid, slug, 'build');
        return () => store.groups.remove(pgid);
      },
      log,
    });
    const runSlugs = await runs.init();
    for (const record of store.desired.all()) if (opts.forget?.(record)) await store.desired.remove(record.slug);
    callbacks = new Callbacks(new Outbox(join(config.stateDir, 'callbacks', 'outbox.ndjson')), runs, {
      secret: config.callbackSecret,
      timeoutMs: config.callbackTimeoutMs,
      backoffMs: config.callbackBackoffMs.split(',').map((x) => Number(x.trim())),
      supervisor,
      log,
      observe: callbackMetrics(metrics.registry),
    });
    stopCallbacks = callbacks.start();
    await runs.resume();
    const desired = store.desired.all();
    for (const record of desired) {
      await supervisor.restore(record).catch((err) => log(`drover: cannot restore ${record.slug}: ${(err as Error).message}`));
    }
    if (desired.length) log(`drover: restored ${desired.length} process(es) from ${config.stateDir}`);
    await store.events.recover(new Set([...desired.map((r) => r.slug), ...runSlugs]));
  } catch (err) {
    board?.close();
    await journal?.close();
    metrics.close();
    await store.close(); // releases the state directory for the next try
    throw err;
  }
  if (opts.listen === false) {
    metrics.close();
    return withoutServer(supervisor, runs, blobs, store, board!, journal!);
  }
  metrics.watch(supervisor, store.events);
  runQueueMetrics(metrics.registry, runs);
  const attach = createAttachHandler({ supervisor, maxBufferedBytes: config.clientMaxBufferedBytes, clients: metrics.clients });
  const inspect = createInspectUpgrade(supervisor.inspection, metrics.clients);
  const { app, table } = createRoutes({
    supervisor,
    runs,
    board,
    config,
    log,
    blobs,
    clients: metrics.clients,
    extra: (table) => {
      table.websocket(inspectWebSocket(inspect.handle));
      table.websocket(attachWebSocket(attach.handle));
      table.route(metricsRoute(metrics));
      for (const r of healthRoutes({ stateDir: config.stateDir, minFreeBytes: config.readyMinFreeBytes, phase: () => phase }))
        table.route(r);
    },
  });
  metrics.routes(table);
  const gate = createGate(
    config.token,
    { boundHost: config.host, allowedHosts: config.allowedHosts, allowedOrigins: config.allowedOrigins },
    { metricsToken: config.metricsToken, healthAuth: config.healthAuth, accessOf: (method, path) => table.access(method, path) },
  );

  let listener;
  try {
    listener = await listen(withRequestIds(metrics.http(gate.http(toNodeHandler(app)))), {
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
    metrics.close();
    stopCallbacks();
    callbacks.close();
    await supervisor.shutdown();
    board.close();
    await journal.close();
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
  server.on(
    'upgrade',
    table.upgrade((_req, socket) => refuseUpgrade(socket, 404, 'Not Found', `no WebSocket endpoint at ${pathOf(_req)}`)),
  );
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
  const stately = config.inspectUrl ? await forwardToStately(config.inspectUrl, { log }) : undefined;
  if (stately) supervisor.inspection.forwardRaw(stately.inspect);
  const port = listener.address.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;

  let closing: Promise<void> | null = null;
  phase = 'serving';
  return {
    url: `http://${host}:${port}`,
    port,
    supervisor,
    runs,
    blobs,
    routes: table,
    app,
    metrics: metrics.registry,
    close() {
      closing ??= (async () => {
        phase = 'stopping';
        server.close(); // stop accepting; requests in flight finish
        attach.close();
        await runs.shutdown();
        board.close(); // answers the long-polls, so the server can close
        stopCallbacks();
        callbacks.close();
        await supervisor.shutdown();
        await journal.close();
        await blobs.close();
        await store.close();
        supervisor.inspection.close(); // after the shutdown, so watchers see every process reach `deleted`
        await new Promise((r) => setImmediate(r)); // let the event streams write those last records
        inspect.close();
        stately?.stop();
        metrics.close();
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

/** The supervisor and its stores without HTTP: closed the same way. */
function withoutServer(
  supervisor: Supervisor,
  runs: Runs,
  blobs: BlobStore,
  store: Store,
  board: JobBoard,
  journal: Journal<PleiadesRecord>,
): Agent {
  blobs.startSweeping();
  let closing: Promise<void> | null = null;
  return {
    url: '',
    port: 0,
    supervisor,
    runs,
    blobs,
    close() {
      closing ??= (async () => {
        board.close();
        await runs.shutdown();
        await supervisor.shutdown();
        await journal.close();
        await blobs.close();
        await store.close();
        supervisor.inspection.close();
      })();
      return closing;
    },
    kill() {
      supervisor.killAll();
    },
  };
}
const pathOf = (req: IncomingMessage) => new URL(req.url ?? '/', 'http://agent').pathname;

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
