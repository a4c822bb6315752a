// POST /experiments: the experiment runner's one form endpoint (seed 003, ModellingWebLab
// fc-runner), for web apps written for it. Its fields, checks and answers are the runner's, in
// its order: the password (in constant time; 401 text when wrong or missing, where the runner
// answered 200 HTML), then `cancelTask`, then an experiment's fields. Answers are text/plain,
// as its client reads them: "<signature> succ <run id>", or a message naming the field at fault.
// As the runner does, a submit answers once the experiment is saved; its archives are fetched
// afterwards, and a fetch that fails reaches the web app as a `failed` callback.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { H3Event } from 'h3';
import type { Experiments, ExperimentRequest } from '../agent/experiments.js';
import { RunError } from '../agent/runs.js';
import { ConflictError } from '../agent/supervisor.js';
import { StoreWriteError } from '../store/desired.js';
import type { RouteTable, Schema } from './route-table.js';
import { validateSourceUrl, type ValidateOptions } from './validate.js';

export interface ExperimentRoutesOptions {
  experiments: Experiments;
  /** The runner's password; without one the endpoint answers 404. */
  password?: string;
  validate: ValidateOptions;
  maxBody: number;
}

const TEXT = 'text/plain; charset=utf-8';
const FORM = 'application/x-www-form-urlencoded';
const MULTIPART = 'multipart/form-data';
const REQUIRED = ['callBack', 'signature', 'model', 'protocol', 'user', 'isAdmin'] as const;

const text = (status: number, body: string) => new Response(body, { status, headers: { 'content-type': TEXT } });

const field = (description: string): Schema => ({ type: 'string', description });
const formSchema: Schema = {
  type: 'object',
  required: ['password'],
  description: 'Either `cancelTask`, or an experiment: callBack, signature, model, protocol, user, isAdmin (dataset, fittingSpec optional)',
  properties: {
    password: field('the runner password (--experiments-password-file or DROVER_EXPERIMENTS_PASSWORD)'),
    cancelTask: field('a run id answered by an earlier submit: it is cancelled with SIGUSR1, then stopped after 5 s'),
    callBack: field('http(s) URL the results are POSTed to (form fields; multipart with the `experiment` zip at the end)'),
    signature: field('opaque; echoed in every callback and sent as `Authorization: Token <signature>` with the downloads'),
    model: field('URL of the model archive: the app (its Procfile runs the experiment type)'),
    protocol: field('URL of the protocol archive, unpacked under protocol/'),
    dataset: field('URL of a dataset archive, unpacked under dataset/'),
    fittingSpec: field('URL of a fitting specification archive, unpacked under fittingSpec/'),
    user: field('who submits: the queue serves users round-robin'),
    isAdmin: { type: 'string', enum: ['true', 'True', 'TRUE', '1', 'false', 'False', 'FALSE', '0'], description: 'admins go first' },
    getProtoInterface: field('not supported (400): drover runs experiments only, it does not parse protocols'),
    getModelInterface: field('not supported (400): drover runs experiments only, it does not parse models'),
  },
};

/** The seed's boolean: "true"/"True"/"1" or "false"/"False"/"0"; null for anything else. */
export function parseFormBool(v: string): boolean | null {
  const s = v.trim().toLowerCase();
  if (s === 'true' || s === '1') return true;
  if (s === 'false' || s === '0') return false;
  return null;
}

/** Compares a presented password with the expected one in time independent of both. */
export function passwordMatches(expected: string, presented: string | null): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(expected), digest(presented ?? '')) && presented !== null;
}

/** The form's fields (urlencoded or multipart), the body read up to maxBody bytes; null when it is neither form type. */
async function readForm(event: H3Event, maxBody: number): Promise<Map<string, string> | null | 'too large'> {
  const type = (event.req.headers.get('content-type') ?? '').toLowerCase();
  const multipart = type.startsWith(MULTIPART);
  if (!multipart && !type.startsWith(FORM)) return null;
  const chunks: Uint8Array[] = [];
  let n = 0;
  if (event.req.body)
    for await (const c of event.req.body as unknown as AsyncIterable<Uint8Array>) {
      n += c.length;
      if (n > maxBody) return 'too large';
      chunks.push(c);
    }
  const body = Buffer.concat(chunks);
  const out = new Map<string, string>();
  if (!multipart) {
    for (const [k, v] of new URLSearchParams(body.toString('utf8'))) if (!out.has(k)) out.set(k, v);
    return out;
  }
  const form = await new Response(body, { headers: { 'content-type': event.req.headers.get('content-type')! } }).formData();
  for (const [k, v] of form) if (typeof v === 'string' && !out.has(k)) out.set(k, v);
  return out;
}

export function registerExperimentRoutes(table: RouteTable, o: ExperimentRoutesOptions): void {
  const answer = (description: string) => ({ description, content: { [TEXT]: { type: 'string' } as Schema } });
  table.route({
    method: 'POST',
    path: '/experiments',
    operationId: 'experiments',
    tag: 'runs',
    access: 'password',
    summary: "The experiment runner's form API (seed 003): submit or cancel an experiment",
    description:
      'Checked in this order: `password`, then `cancelTask`, then an experiment. It takes the runner password instead of the agent token, and is off (404) without one. ' +
      'An experiment is a run (see /runs) of the model archive, with the protocol under protocol/, running the Procfile type `experiment` (--experiment-process-type); admins first, users round-robin. ' +
      'Its callbacks are forms: `returntype` running, then success (a file named `success` in outputs/, or exit 0) / partial (a `*plot_data.csv`) / failed with `returnmsg` and the file field `experiment`: a zip of outputs/ with stdout.txt (its output) and errors.txt (when it was stopped). ' +
      'An archive that cannot be fetched or unpacked is a `failed` callback naming it.',
    body: { required: true, content: { [FORM]: formSchema, [MULTIPART]: formSchema } },
    responses: {
      200: answer(
        'Submitted: "<signature> succ <run id>" once the experiment is saved (its archives are fetched afterwards; a failure there is a `failed` callback naming the archive); or empty for `cancelTask`, whatever the id',
      ),
      400: answer(
        'A field is missing or invalid (URLs must be absolute http or https), or getProtoInterface / getModelInterface (not supported): the message starts with the field',
      ),
      401: answer('Missing or incorrect password supplied.'),
      404: answer('The endpoint is off: no runner password is set'),
      413: answer('The body is larger than 1 MiB'),
      415: answer('The body is not a form'),
      503: answer('The agent is shutting down'),
      507: answer('The experiment could not be saved'),
    },
    handler: async (event) => {
      if (!o.password)
        return text(404, 'POST /experiments is off: start drover with --experiments-password-file or DROVER_EXPERIMENTS_PASSWORD');
      const form = await readForm(event, o.maxBody);
      if (form === 'too large') return text(413, `the body is larger than ${o.maxBody} bytes`);
      if (form === null) return text(415, `the body must be a form (${FORM} or ${MULTIPART})`);
      if (!passwordMatches(o.password, form.get('password') ?? null)) return text(401, 'Missing or incorrect password supplied.');
      const cancel = form.get('cancelTask');
      if (cancel !== undefined) {
        o.experiments.cancel(cancel.trim());
        return text(200, '');
      }
      for (const f of ['getProtoInterface', 'getModelInterface'])
        if (form.has(f)) return text(400, `${f}: not supported: drover runs experiments only`);
      for (const f of REQUIRED) if (!form.get(f)?.trim()) return text(400, `${f}: is required`);
      const isAdmin = parseFormBool(form.get('isAdmin')!);
      if (isAdmin === null) return text(400, `isAdmin: must be true, True, 1, false, False or 0`);
      const signature = form.get('signature')!;
      if (signature.length > 4096) return text(400, 'signature: is longer than 4096 characters');
      const user = form.get('user')!.trim();
      if (user.length > 200) return text(400, 'user: is longer than 200 characters');
      let cb: URL | null = null;
      try {
        cb = new URL(form.get('callBack')!);
      } catch {
        // below
      }
      if (!cb || (cb.protocol !== 'http:' && cb.protocol !== 'https:')) return text(400, 'callBack: must be an absolute http(s) URL');
      const req: ExperimentRequest = { callBack: cb.href, signature, model: '', protocol: '', user, isAdmin };
      for (const f of ['model', 'protocol', 'dataset', 'fittingSpec'] as const) {
        const v = form.get(f);
        if (v === undefined || v === '') continue;
        try {
          // The runner's archives come from its web app: http(s) only, whatever --allow-file-urls says.
          req[f] = validateSourceUrl({ source_url: v }, { ...o.validate, allowFileUrls: false });
        } catch (err) {
          return text(400, `${f}: ${(err as Error).message.replace(/^source_url: /, '')}`);
        }
      }
      try {
        const run = await o.experiments.submit(req);
        return text(200, `${signature} succ ${run.id}`);
      } catch (err) {
        if (err instanceof RunError)
          return text(err.status, err.field && !err.message.startsWith(err.field) ? `${err.field}: ${err.message}` : err.message);
        if (err instanceof ConflictError) return text(503, err.message);
        if (err instanceof StoreWriteError) return text(507, err.message);
        throw err;
      }
    },
  });
}
