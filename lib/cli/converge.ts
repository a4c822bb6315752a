// Converging an agent to a desired set of processes: what `deploy` (one app) and `apply`
// (a whole manifest) share. The plan is pure; executing it follows the documents' links.
import { slugOf } from '../process/slug.js';
import { envDigest, sourceDigest } from '../api/digest.js';
import { CliError, linkOf, oneLine, type Client, type Doc } from './client.js';
import { painter, stateColor, type Out } from './format.js';

/** A process the plan wants (not the store's DesiredProcess: this one is sent as a create request). */
export interface PlannedProcess {
  app: string;
  node: string;
  processType: string;
  /** null in a dry run when the source is not on the agent yet (it will be uploaded). */
  sourceUrl: string | null;
  env: Record<string, string>;
}

export interface Plan {
  create: PlannedProcess[];
  /** Exists, but differs: deleted, then created again. */
  replace: { current: Doc; want: PlannedProcess; why: string }[];
  remove: Doc[];
  keep: Doc[];
}

/** `{web: 2, worker: 1}` → web.0, web.1, worker.0. */
export function expand(
  app: string,
  counts: Record<string, number>,
  sourceUrl: string | null,
  env: Record<string, string>,
): PlannedProcess[] {
  const out: PlannedProcess[] = [];
  for (const [type, n] of Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : 1))) {
    for (let i = 0; i < n; i++) out.push({ app, node: `${type}.${i}`, processType: type, sourceUrl, env });
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
      if (why) out.replace.push({ current: cur, want, why });
      else out.keep.push(cur);
    }
  }
  // Procs (POST /procs, `proc_id`) belong to their scheduler, never to a deploy or a manifest.
  for (const doc of current) if (doc.proc_id === undefined && managed(doc) && !wanted.has(String(doc.slug))) out.remove.push(doc);
  return out;
}

export function isEmpty(p: Plan): boolean {
  return p.create.length + p.replace.length + p.remove.length === 0;
}

/** One line per process: what will happen to it. */
export function describePlan(p: Plan, paint = painter(false)): string[] {
  const rows: [string, string][] = [
    ...p.create.map((w): [string, string] => [plannedSlug(w), paint('green', 'create')]),
    ...p.replace.map((r): [string, string] => [plannedSlug(r.want), `${paint('yellow', 'replace')} (${r.why})`]),
    ...p.remove.map((d): [string, string] => [String(d.slug), paint('red', 'delete')]),
    ...p.keep.map((d): [string, string] => [String(d.slug), paint('gray', 'unchanged')]),
  ];
  const width = Math.max(0, ...rows.map(([s]) => s.length));
  return rows.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([slug, what]) => `${slug.padEnd(width)}  ${what}`);
}

/** Deletes what goes, then creates what is new; returns the created processes' status documents. */
export async function execute(client: Client, p: Plan): Promise<Doc[]> {
  const gone = [...p.remove, ...p.replace.map((r) => r.current)];
  // Deletes wait for a graceful stop: run them side by side.
  await Promise.all(gone.map((doc) => client.json('POST', linkOf(doc, 'delete', 'deleting processes'), { body: {} })));
  const createUrl = await client.link('create', 'process creation');
  const created: Doc[] = [];
  for (const want of [...p.create, ...p.replace.map((r) => r.want)]) {
    if (want.sourceUrl === null) throw new CliError(`internal: no source URL for ${plannedSlug(want)}`);
    created.push(
      await client.json('POST', createUrl, {
        body: { app: want.app, node: want.node, process_type: want.processType, source_url: want.sourceUrl, env: want.env },
      }),
    );
  }
  return created;
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
