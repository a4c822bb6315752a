// The CLI's view of an agent: it knows one path, `/`, and follows the links the documents
// offer. Every failure becomes a CliError: one line, and an exit code that says what kind.

/** Exit codes of the client verbs (README "Command line" lists them). */
export const EXIT = {
  ok: 0,
  /** A process failed, or the agent answered with an error. */
  failed: 1,
  /** Bad command line, manifest or input file. */
  usage: 2,
  /** The agent could not be reached. */
  unreachable: 3,
  /** The agent refused the credentials (401/403). */
  auth: 4,
  /** The agent does not offer what the verb needs (no such link). */
  unsupported: 5,
  /** No such process (or data object). */
  notFound: 6,
} as const;

export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
  }
}

// Status documents and the index are open-ended JSON: fields are checked where they are used.
export type Doc = Record<string, any>;

export const DEFAULT_URL = 'http://127.0.0.1:8080';
const TIMEOUT_MS = 30_000;

export interface RequestOptions {
  body?: unknown;
  headers?: Record<string, string>;
  /** Raw body (a stream) instead of JSON. */
  raw?: BodyInit;
  /** No timeout: for streams that follow live output. */
  stream?: boolean;
  signal?: AbortSignal;
}

export class Client {
  readonly url: string;
  private readonly origin: string;
  private indexDoc: Doc | null = null;

  constructor(
    url = process.env.DROVER_URL || DEFAULT_URL,
    private readonly token = process.env.DROVER_TOKEN || undefined,
  ) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new CliError(`DROVER_URL is not a valid URL: ${JSON.stringify(url)}`, EXIT.usage);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new CliError(`DROVER_URL must be an http or https URL, got ${JSON.stringify(url)}`, EXIT.usage);
    }
    this.url = parsed.href.replace(/\/$/, '');
    this.origin = parsed.host;
  }

  /** Credentials go only to the agent's own host, whatever a document links to. */
  authHeaders(url: string): Record<string, string> {
    if (!this.token) return {};
    try {
      return new URL(url).host === this.origin ? { authorization: `Bearer ${this.token}` } : {};
    } catch {
      return {};
    }
  }

  async request(method: string, url: string, opts: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json', ...this.authHeaders(url), ...opts.headers };
    let body: BodyInit | undefined = opts.raw;
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const signals = [opts.signal, opts.stream ? undefined : AbortSignal.timeout(TIMEOUT_MS)].filter((s): s is AbortSignal => !!s);
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        body,
        signal: signals.length ? AbortSignal.any(signals) : undefined,
        ...(body && typeof body === 'object' && 'getReader' in body ? { duplex: 'half' } : {}),
      } as RequestInit);
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw this.networkError(err, url);
    }
    if (!res.ok) throw await this.httpError(res, method, url);
    return res;
  }

  async json(method: string, url: string, opts: RequestOptions = {}): Promise<Doc> {
    const res = await this.request(method, url, opts);
    const text = await res.text();
    try {
      const doc = JSON.parse(text);
      if (typeof doc === 'object' && doc !== null) return doc;
    } catch {
      // fall through
    }
    throw new CliError(`${url} did not answer with a JSON document (is ${this.url} a drover agent?)`);
  }

  async index(): Promise<Doc> {
    this.indexDoc ??= await this.json('GET', `${this.url}/`);
    if (Array.isArray(this.indexDoc) || typeof this.indexDoc.list !== 'string') {
      throw new CliError(`${this.url} did not answer like a drover agent (its index has no "list" link)`);
    }
    return this.indexDoc;
  }

  /** A link from the index; a one-line error when the agent does not offer it. */
  async link(name: string, what = name): Promise<string> {
    return linkOf(await this.index(), name, what);
  }

  async processes(): Promise<Doc[]> {
    const list = await this.json('GET', await this.link('list', 'a process listing'));
    if (!Array.isArray(list.processes)) throw new CliError('the agent\'s process listing has no "processes" array');
    return list.processes as Doc[];
  }

  /** The status document of one process, found in the listing (the only way the links allow). */
  async process(slug: string): Promise<Doc> {
    const found = (await this.processes()).find((p) => p.slug === slug);
    if (!found) throw new CliError(`no process "${slug}" on the agent at ${this.url} (see drover ps)`, EXIT.notFound);
    return found;
  }

  private networkError(err: unknown, url: string): CliError {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    if (e.name === 'TimeoutError')
      return new CliError(`the agent at ${this.url} did not answer within ${TIMEOUT_MS / 1000} s`, EXIT.unreachable);
    const code = e.cause?.code;
    const why = code === 'ECONNREFUSED' ? 'connection refused' : (code ?? e.cause?.message ?? e.message);
    const hint = new URL(url).host === this.origin ? '; is it running? (drover serve, or set DROVER_URL)' : ` (following a link to ${url})`;
    return new CliError(`cannot reach the agent at ${this.url} (${why})${hint}`, EXIT.unreachable);
  }

  private async httpError(res: Response, method: string, url: string): Promise<CliError> {
    let detail = '';
    try {
      const body = (await res.json()) as Doc;
      detail = (body.errors as Doc[] | undefined)?.map((e) => String(e.detail)).join('; ') ?? '';
    } catch {
      // not JSON: the status line is all there is
    }
    const status = `HTTP ${res.status}`;
    if (res.status === 401 || res.status === 403) {
      const hint = this.token ? 'the token in DROVER_TOKEN was refused' : 'the agent requires a token: set DROVER_TOKEN';
      return new CliError(`${hint} (${status} from ${this.url}${detail ? `: ${detail}` : ''})`, EXIT.auth);
    }
    const what = detail || `${method} ${url} failed`;
    return new CliError(`${oneLine(what)} (${status})`, res.status === 404 ? EXIT.notFound : EXIT.failed);
  }
}

/** A link from any document; a one-line error naming what is missing. */
export function linkOf(doc: Doc, name: string, what = name): string {
  const url = doc[name];
  if (typeof url !== 'string' || url === '') {
    throw new CliError(`the agent does not offer ${what} (no "${name}" link${doc.slug ? ` for ${doc.slug}` : ''})`, EXIT.unsupported);
  }
  return url;
}

export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
