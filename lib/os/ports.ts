import { createServer } from 'node:net';

/**
 * Hands out free TCP ports for children's $PORT. A port stays reserved for its process across
 * restarts (so clients and load balancers keep pointing at it) until the process is deleted.
 */
export class PortPool {
  private readonly reserved = new Set<number>();

  async reserve(): Promise<number> {
    for (let i = 0; i < 20; i++) {
      const port = await probeFreePort();
      if (!this.reserved.has(port)) {
        this.reserved.add(port);
        return port;
      }
    }
    throw new Error('no free TCP port found for $PORT');
  }

  /** Marks a known port as taken (a restored process keeps the port it had). */
  claim(port: number): void {
    this.reserved.add(port);
  }

  release(port: number): void {
    this.reserved.delete(port);
  }
}

function probeFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
