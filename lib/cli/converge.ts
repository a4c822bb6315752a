// Converging an agent to a desired set of processes: what `deploy` (one app) and `apply`
// (a whole manifest) share. The plan is pure; executing it follows the documents' links.
import { slugOf } from '../process/slug.js';
import { envDigest, sourceDigest } from '../api/digest.js';
import { CliError, linkOf, oneLine, type Client, type Doc } from './client.js';
import { painter, stateColor, type Out } from './format.js';
import { outputLine, readEvents } from './stream.js';

/** A process the plan wants (not the store's DesiredProcess: this one is sent as a create request). */
export interface PlannedProcess {
  app: string;
  node: string;
  processType: string;
  /** null in a dry run when the source is not on the agent yet (it will be uploaded). */
  sourceUrl: string | null;
  env: Record<string, string>;
  /** Merge `env` into what the app's processes have (deploy), instead of giving exactly `env` (apply, --replace-env). */
  envMerge?: boolean;
}

export interface Plan {
  create: PlannedProcess[];
  /**
   * Exists, but differs: replaced in place through its `replace` link (built while it runs), or
   * deleted and created again when its type changed or the agent offers no replace.
   */
  replace: { current: Doc; want: PlannedProcess; why: string; recreate: boolean }[];
  remove: Doc[];
  keep: Doc[];
}

/** `{web: 2, worker: 1}` → web.0, web.1, worker.0. */
export function expand(
  app: string,
  counts: Record<string, number>,
  sourceUrl: string | null,
  env: Record<string, string>,
  envMerge = false,
): PlannedProcess[] {
  const out: PlannedProcess[] = [];
  for (const [type, n] of Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : 1))) {
    for (let i = 0; i < n; i++)
      out.push({ app, node: `${type}.${i}`, processType: type, sourceUrl, env, ...(envMerge ? { envMerge } : {}) });
  }
  return out;
}

/** The slug the agent will give it. */
const plannedSlug = (p: PlannedProcess) => slugOf(p.app, p.node);

/** Why a running process no longer matches what is wanted, or null if it does. */
export function difference(current: Doc, want: PlannedProcess): string | null {
  if (current.process_type !== want.processType) return `type ${current.process_type} → ${want.processType}`;
  if (typeof current.source_digest !== 'string' || typeof current.env_digest !== 'string')
    return 'the agent does not report digests to compare';
  if (want.sourceUrl === null || current.source_digest !== sourceDigest(want.sourceUrl)) return 'source changed';
  // Merging: the values are not shown, so the agent decides (and says which names changed).
  if (want.envMerge) return Object.keys(want.env).length > 0 ? 'env given' : null;
  if (current.env_digest !== envDigest(want.env)) return 'env changed';
  return null;
}

/**
 * Compares what is wanted with what runs. `managed` says which current processes the plan
 * owns (one app for deploy, everything for apply): those not wanted are removed.
 */
export function plan(desired: PlannedProcess[], current: Doc[], managed: (doc: Doc) => boolean): Plan {
  const bySlug = new Map(current.map((d) => [String(d.slug), d]));
  const wanted = new Set(desired.map(plannedSlug));
  const out: Plan = { create: [], replace: [], remove: [], keep: [] };
  for (const want of desired) {
    const cur = bySlug.get(plannedSlug(want));
    if (!cur) out.create.push(want);
    else {
      const why = difference(cur, want);
      const recreate = cur.process_type !== want.processType || typeof cur.replace !== 'string';
      if (why) out.replace.push({ current: cur, want, why, recreate });
      else out.keep.push(cur);
    }
  }
  // Procs (POST /procs, `proc_id`) belong to their scheduler, never to a deploy or a manifest.
  for (const doc of current) if (doc.proc_id === undefined && managed(doc) && !wanted.has(String(doc.slug))) out.remove.push(doc);
  return out;
}

/** An env merge that may turn out to change nothing: the agent decides, and says so. */
export const maybe = (r: Plan['replace'][number]) => r.why === 'env given';

/** Nothing certain to change (a merge of an env the processes already have is no change). */
export function isEmpty(p: Plan): boolean {
  return p.create.length + p.replace.filter((r) => !maybe(r)).length + p.remove.length === 0;
}

/** One line per process: what will happen to it. */
export function describePlan(p: Plan, paint = painter(false)): string[] {
  const rows: [string, string][] = [
    ...p.create.map((w): [string, string] => [plannedSlug(w), paint('green', 'create')]),
    ...p.replace
      .filter((r) => !maybe(r))
      .map((r): [string, string] => [plannedSlug(r.want), `${paint('yellow', r.recreate ? 'delete and create' : 'replace')} (${r.why})`]),
    ...p.remove.map((d): [string, string] => [String(d.slug), paint('red', 'delete')]),
    ...p.keep.map((d): [string, string] => [String(d.slug), paint('gray', 'unchanged')]),
  ];
  const width = Math.max(0, ...rows.map(([s]) => s.length));
  return rows.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([slug, what]) => `${slug.padEnd(width)}  ${what}`);
}

export interface ExecuteOptions {
  strategy?: 'stop-first' | 'start-first';
  /** One line per process as it is done. */
  out?: Out | null;
  paint?: ReturnType<typeof painter>;
}

/**
 * Deletes what goes, replaces what changed (one process after the other, so the others of a
 * type keep serving), creates what is new. Returns the status documents of every process it
 * touched: created or replaced (a replace that changed nothing is not one).
 */
export async function execute(client: Client, p: Plan, opts: ExecuteOptions = {}): Promise<Doc[]> {
  const paint = opts.paint ?? painter(false);
  const say = (slug: string, text: string) => opts.out?.write(`${slug}  ${text}\n`);
  const gone = [...p.remove, ...p.replace.filter((r) => r.recreate).map((r) => r.current)];
  // Deletes wait for a graceful stop: run them side by side.
  await Promise.all(gone.map((doc) => client.json('POST', linkOf(doc, 'delete', 'deleting processes'), { body: {} })));
  const touched: Doc[] = [];
  for (const r of p.replace.filter((r) => !r.recreate)) {
    const want = r.want;
    if (want.sourceUrl === null) throw new CliError(`internal: no source URL for ${plannedSlug(want)}`);
    const sourceChanged = r.current.source_digest !== sourceDigest(want.sourceUrl);
    const body = {
      ...(sourceChanged ? { source_url: want.sourceUrl } : {}),
      env: want.env,
      ...(want.envMerge ? { env_merge: true } : {}),
      strategy: opts.strategy ?? 'stop-first',
    };
    const doc = await client.json('POST', linkOf(r.current, 'replace', 'replacing processes'), { body });
    const rep = (doc.replaced ?? {}) as Doc;
    const changed = Array.isArray(rep.changed) ? (rep.changed as string[]) : [];
    if (changed.length === 0 && !sourceChanged) continue; // the merged env is what it had
    touched.push(doc);
    const moved = rep.from_port !== rep.to_port ? `, port ${rep.from_port} → ${rep.to_port}` : '';
    const down = typeof rep.down_ms === 'number' ? `; ${seconds(rep.down_ms)} without service` : '';
    say(String(doc.slug), `${paint('yellow', 'replaced')} (${rep.strategy}; ${changed.join(', ') || 'source'}${moved})${down}`);
  }
  const createUrl = await client.link('create', 'process creation');
  for (const want of [...p.create, ...p.replace.filter((r) => r.recreate).map((r) => r.want)]) {
    if (want.sourceUrl === null) throw new CliError(`internal: no source URL for ${plannedSlug(want)}`);
    // Config kept: a new process of an app that runs starts from its env.
    const sibling = want.envMerge ? [...p.keep, ...p.replace.map((r) => r.current)].find((d) => d.app === want.app) : undefined;
    const doc = await client.json('POST', createUrl, {
      body: {
        app: want.app,
        node: want.node,
        process_type: want.processType,
        source_url: want.sourceUrl,
        env: want.env,
        ...(sibling && !p.replace.some((r) => r.recreate && r.current.slug === sibling.slug) ? { env_from: sibling.slug } : {}),
      },
    });
    touched.push(doc);
    say(String(doc.slug), paint('green', 'created'));
  }
  return touched;
}

/** "0.85 s", "12 s". */
function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms / 1000)} s`;
}

export interface HealthOptions {
  timeoutMs: number;
  /** How long a process without a readiness check must stay running. */
  minUptimeMs: number;
  pollMs?: number;
  out: Out;
  /** Log lines shown for each failing process. */
  logLines?: number;
}

/**
 * Waits until every touched process is healthy: ready (its $PORT accepts connections, for web
 * processes) or running for `minUptimeMs`, without a new error meanwhile. Prints each outcome;
 * a failing process gets its last error and its last log lines. Resolves true when all are.
 */
export async function waitHealthy(client: Client, docs: Doc[], opts: HealthOptions): Promise<boolean> {
  const paint = painter(opts.out.isTTY === true && !process.env.NO_COLOR);
  const width = Math.max(0, ...docs.map((d) => String(d.slug).length));
  const show = (slug: string, text: string) => opts.out.write(`${slug.padEnd(width)}  ${text}\n`);
  const pending = new Map(
    docs.map((d) => [
      String(d.slug),
      { doc: d, url: linkOf(d, 'status', 'process status'), errors: Array.isArray(d.errors) ? d.errors.length : 0, last: '' },
    ]),
  );
  const failed: Doc[] = [];
  const deadline = Date.now() + opts.timeoutMs;
  while (pending.size > 0) {
    for (const [slug, p] of [...pending]) {
      const doc = await client.json('GET', p.url);
      const state = String(doc.state);
      const errors = Array.isArray(doc.errors) ? (doc.errors as string[]) : [];
      // An agent that keeps fewer errors than before still shows a new one last.
      const fresh = errors.length > p.errors || (errors.length > 0 && errors[errors.length - 1] !== (p.doc.errors ?? []).at(-1));
      const checked = doc.readiness === 'port';
      const upMs = doc.started_at ? Date.now() - Date.parse(String(doc.started_at)) : 0;
      if (fresh) {
        failed.push(doc);
        pending.delete(slug);
        show(slug, paint('red', `failed: ${oneLine(String(errors[errors.length - 1]))}`));
      } else if (state === 'running' && (checked ? doc.ready === true : upMs >= opts.minUptimeMs)) {
        const what = checked ? `ready on port ${doc.port}` : `running for ${Math.round(upMs / 100) / 10} s`;
        show(slug, paint('green', `${what} (pid ${doc.pid})`));
        pending.delete(slug);
      } else if (state !== p.last) {
        show(slug, paint(stateColor(state), state));
      }
      p.last = state;
    }
    if (pending.size === 0) break;
    if (Date.now() > deadline) {
      for (const [slug, p] of pending) {
        show(
          slug,
          paint('red', `still ${p.last}${p.last === 'running' ? ', not ready' : ''} after ${Math.round(opts.timeoutMs / 1000)} s`),
        );
        failed.push(p.doc);
      }
      break;
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 250));
  }
  for (const doc of failed) await showLastLines(client, doc, opts.out, opts.logLines ?? 10);
  return failed.length === 0;
}

/** The last lines of a process's output, from its event log, indented under its name. */
async function showLastLines(client: Client, doc: Doc, out: Out, n: number): Promise<void> {
  if (typeof doc.events !== 'string') return;
  const last: string[] = [];
  try {
    const url = new URL(doc.events);
    url.searchParams.set('follow', 'false');
    await readEvents(await client.request('GET', url.href, { stream: true }), (ev) => {
      const line = outputLine(ev);
      if (line === null) return;
      last.push(line);
      if (last.length > n) last.shift();
    });
  } catch {
    return; // the lines are a help, not the verdict
  }
  if (last.length === 0) return;
  out.write(`--- last ${last.length} log line${last.length === 1 ? '' : 's'} of ${doc.slug}:\n`);
  for (const l of last) out.write(`    ${l}\n`);
}

export interface WaitOptions {
  timeoutMs: number;
  pollMs?: number;
  out: Out;
}

/**
 * Shows each process's state as it changes until it is running or has failed (an error while
 * not running: a failed download, build or start). Resolves true when all are running.
 */
export async function waitUntilRunning(client: Client, docs: Doc[], opts: WaitOptions): Promise<boolean> {
  const paint = painter(opts.out.isTTY === true && !process.env.NO_COLOR);
  const width = Math.max(0, ...docs.map((d) => String(d.slug).length));
  const pending = new Map(docs.map((d) => [String(d.slug), { url: linkOf(d, 'status', 'process status'), last: '' }]));
  const deadline = Date.now() + opts.timeoutMs;
  let ok = true;
  const show = (slug: string, text: string) => opts.out.write(`${slug.padEnd(width)}  ${text}\n`);
  while (pending.size > 0) {
    for (const [slug, p] of [...pending]) {
      const doc = await client.json('GET', p.url);
      const state = String(doc.state);
      const errors = Array.isArray(doc.errors) ? (doc.errors as string[]) : [];
      if (state === 'running') {
        show(slug, paint('green', `running${doc.pid ? ` (pid ${doc.pid}${doc.port ? `, port ${doc.port}` : ''})` : ''}`));
        pending.delete(slug);
      } else if (errors.length > 0) {
        show(slug, paint('red', `failed: ${oneLine(String(errors[errors.length - 1]))}`));
        pending.delete(slug);
        ok = false;
      } else if (state !== p.last) {
        show(slug, paint(stateColor(state), state));
      }
      p.last = state;
    }
    if (pending.size === 0) break;
    if (Date.now() > deadline) {
      for (const [slug, p] of pending) show(slug, paint('red', `still ${p.last} after ${Math.round(opts.timeoutMs / 1000)} s`));
      return false;
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 250));
  }
  return ok;
}
