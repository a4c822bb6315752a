import http from 'node:http';

// Keep-alive, so each measured request is one round trip, not a TCP handshake plus one.
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 64 });

export interface Response {
  status: number;
  text: string;
  /** Wall time from sending the request to the last byte of the body, in ms. */
  ms: number;
}

/** One HTTP request with a JSON body (if any); resolves with the whole response body. */
export function request(method: string, url: string, body?: unknown): Promise<Response> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request(
      url,
      {
        method,
        agent: keepAlive,
        headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - t0 }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** A request that must answer `expect`; resolves with the parsed JSON body. */
export async function json<T = any>(
  method: string,
  url: string,
  body?: unknown,
  expect = method === 'POST' && url.endsWith('/create-process') ? 201 : 200,
): Promise<T> {
  const res = await request(method, url, body);
  if (res.status !== expect) throw new Error(`${method} ${url}: HTTP ${res.status} (expected ${expect}): ${res.text.slice(0, 300)}`);
  return JSON.parse(res.text) as T;
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` in flight. */
export async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/** Closes idle keep-alive sockets so the bench process can exit. */
export function closeConnections(): void {
  keepAlive.destroy();
}
