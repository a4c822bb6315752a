import { createReadStream, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';

/** A plain HTTP server on loopback serving one file, with Content-Length, as a release host would. */
export async function serveFile(file: string): Promise<{ url: string; close(): Promise<void> }> {
  const size = statSync(file).size;
  const server: Server = createServer((req, res) => {
    if (req.url !== '/app.tar.gz') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': size });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}/app.tar.gz`,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
