// A small HTTP(S) forward proxy on loopback: plain http requests are forwarded (so their method,
// URL and status are seen), https goes through CONNECT as an opaque tunnel (host:port only, no
// interception). Every exchange is reported once it ends, with the bytes each way, so a caller
// can count a job's traffic and list the pages it hit. Only traffic that honours the proxy
// variables passes through here.
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface ProxyExchange {
  /** GET, POST, … for http; CONNECT for a tunnel. */
  method: string;
  /** The absolute URL for http; host:port for a tunnel. */
  url: string;
  /** The upstream's status (null for a tunnel, or when the upstream could not be reached). */
  status: number | null;
  /** Bytes from the upstream to the client (body and headers as relayed). */
  bytesIn: number;
  /** Bytes from the client to the upstream. */
  bytesOut: number;
  error?: string;
}

export interface ForwardProxy {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** Stops accepting and cuts every open exchange. */
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function headerBytes(headers: Record<string, string | string[] | undefined>): number {
  let n = 0;
  for (const [k, v] of Object.entries(headers)) {
    for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) n += k.length + one.length + 4;
  }
  return n;
}

/** Starts a proxy on 127.0.0.1 (an ephemeral port); `onExchange` hears of each request or tunnel as it ends. */
export async function startForwardProxy(onExchange: (e: ProxyExchange) => void): Promise<ForwardProxy> {
  const sockets = new Set<Socket | Duplex>();
  const report = (e: ProxyExchange): void => {
    try {
      onExchange(e);
    } catch {
      // a broken listener must not break the proxy
    }
  };

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let target: URL;
    try {
      target = new URL(req.url ?? '');
      if (target.protocol !== 'http:') throw new Error('not http');
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('drover proxy: send absolute http:// URLs (https goes through CONNECT)\n');
      return;
    }
    const url = target.href;
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    let bytesOut = headerBytes(req.headers) + (req.method?.length ?? 0) + url.length;
    let bytesIn = 0;
    let status: number | null = null;
    let done = false;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      report({ method: req.method ?? 'GET', url, status, bytesIn, bytesOut, ...(error ? { error } : {}) });
    };
    const up = httpRequest(target, { method: req.method, headers, agent: false }, (upRes) => {
      status = upRes.statusCode ?? null;
      bytesIn += headerBytes(upRes.headers);
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(upRes.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, out);
      upRes.on('data', (c: Buffer) => {
        bytesIn += c.length;
      });
      upRes.pipe(res);
      upRes.on('end', () => finish());
      upRes.on('error', (e) => {
        finish(e.message);
        res.destroy();
      });
    });
    up.on('error', (e) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(`drover proxy: ${e.message}\n`);
      else res.destroy();
      finish(e.message);
    });
    req.on('data', (c: Buffer) => {
      bytesOut += c.length;
    });
    req.pipe(up);
    res.on('close', () => {
      if (!done) {
        up.destroy();
        finish('client closed the connection');
      }
    });
  });

  server.on('connect', (req: IncomingMessage, client: Duplex, head: Buffer) => {
    const hostPort = req.url ?? '';
    const m = /^(\[[^\]]+\]|[^:\s]+):(\d{1,5})$/.exec(hostPort);
    client.on('error', () => {});
    if (!m) {
      client.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    let bytesIn = 0;
    let bytesOut = head.length;
    let done = false;
    let status: number | null = null;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      sockets.delete(client);
      sockets.delete(up);
      report({ method: 'CONNECT', url: hostPort, status, bytesIn, bytesOut, ...(error ? { error } : {}) });
    };
    const up = connect(Number(m[2]), m[1].replace(/^\[|\]$/g, ''), () => {
      status = 200;
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) up.write(head);
      up.on('data', (c: Buffer) => {
        bytesIn += c.length;
      });
      client.on('data', (c: Buffer) => {
        bytesOut += c.length;
      });
      up.pipe(client);
      client.pipe(up);
    });
    sockets.add(client);
    sockets.add(up);
    up.on('error', (e) => {
      if (status === null) client.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n');
      else client.destroy();
      finish(e.message);
    });
    up.on('close', () => {
      client.destroy();
      finish();
    });
    client.on('close', () => {
      up.destroy();
      finish();
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
      }),
  };
}
