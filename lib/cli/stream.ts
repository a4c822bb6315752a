// Reading a process's output from the agent: the WebSocket attach link (live lines) and the
// event log link (NDJSON, from an id, optionally following).
import { WebSocket } from 'ws';
import { CliError, EXIT, type Client, type Doc } from './client.js';

export interface AttachEnd {
  code: number;
  reason: string;
}

/** Streams an attach link's frames (one per line) to onLine until the agent closes it. */
export function attachStream(client: Client, url: string, onLine: (line: string) => void): Promise<AttachEnd> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: client.authHeaders(url.replace(/^ws/, 'http')) });
    ws.on('message', (data) => onLine(data.toString()));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.length < 65536 ? c : ''));
      res.on('end', () => {
        let detail = '';
        try {
          detail = (JSON.parse(body) as Doc).errors?.[0]?.detail ?? '';
        } catch {
          // not JSON
        }
        const status = res.statusCode ?? 0;
        const code = status === 401 || status === 403 ? EXIT.auth : status === 404 ? EXIT.notFound : EXIT.failed;
        const hint =
          status === 401 || status === 403
            ? process.env.DROVER_TOKEN
              ? 'the token in DROVER_TOKEN was refused'
              : 'the agent requires a token: set DROVER_TOKEN'
            : 'attach refused';
        reject(new CliError(`${hint} (HTTP ${status}${detail ? `: ${detail}` : ''})`, code));
      });
    });
    ws.on('error', (err: Error & { code?: string }) => {
      reject(
        new CliError(`cannot attach to ${url} (${err.code === 'ECONNREFUSED' ? 'connection refused' : err.message})`, EXIT.unreachable),
      );
    });
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
}

/** What a close means to the user: null when it ended normally (the process was deleted). */
export function attachEndError(end: AttachEnd): CliError | null {
  if (end.code === 1000 || end.code === 1001) return null;
  if (end.code === 1006) return new CliError('lost the connection to the agent (did it stop?)', EXIT.unreachable);
  return new CliError(`the agent closed the stream: ${end.reason || `code ${end.code}`}`, EXIT.failed);
}

const MAX_LINE = 16 * 1024 * 1024;

/** Reads an NDJSON response, one parsed event per line. */
export async function readEvents(res: Response, onEvent: (ev: Doc) => void): Promise<void> {
  if (!res.body) return;
  const decoder = new TextDecoder();
  let partial = '';
  const take = (line: string) => {
    if (line.trim() === '') return;
    try {
      onEvent(JSON.parse(line) as Doc);
    } catch {
      throw new CliError(`the event stream sent a line that is not JSON: ${line.slice(0, 80)}`);
    }
  };
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    partial += decoder.decode(chunk, { stream: true });
    let nl = partial.indexOf('\n');
    while (nl !== -1) {
      take(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
      nl = partial.indexOf('\n');
    }
    if (partial.length > MAX_LINE) throw new CliError('the event stream sent a line longer than 16 MiB');
  }
  take(partial + decoder.decode());
}

/** The text of an output event (a line of stdout, stderr or build output), or null for other events. */
export function outputLine(ev: Doc): string | null {
  if (ev.type !== 'output' && ev.type !== 'line') return null;
  const text = ev.text ?? ev.line;
  return typeof text === 'string' ? text : null;
}

export function withQuery(url: string, params: Record<string, string | undefined>): string {
  const u = new URL(url);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
  return u.href;
}
