import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Binds `port` (0: any the kernel picks) for a moment: the port that was free, or null if it is in use. */
export type PortProbe = (port: number) => Promise<number | null>;

export interface PortPoolOptions {
  probe?: PortProbe;
  /** The range to go through when the kernel's picks keep landing on reserved ports. */
  range?: [low: number, high: number];
}

/** Random picks by the kernel before going through the range in order. */
const KERNEL_PICKS = 8;

/**
 * Hands out free TCP ports for children's $PORT. A port stays reserved for its process across
 * restarts (so clients and load balancers keep pointing at it) until the process is deleted.
 */
export class PortPool {
  private readonly reserved = new Set<number>();
  private readonly probe: PortProbe;
  private range: [number, number] | undefined;
  /** Where the next walk through the range starts (an offset into it). */
  private cursor = 0;

  constructor(private readonly opts: PortPoolOptions = {}) {
    this.probe = opts.probe ?? probePort;
  }

  async reserve(): Promise<number> {
    for (let i = 0; i < KERNEL_PICKS; i++) {
      const port = await this.probe(0);
      if (port !== null && !this.reserved.has(port)) return this.take(port);
    }
    // Reserved ports are free as far as the kernel knows (a worker that never listens), and
    // Linux picks bind(0) ports from only part of the ephemeral range (about 7000 of 28000
    // here): with thousands of processes its picks keep landing on ours. Walk the range.
    const [low, high] = (this.range ??= this.opts.range ?? localPortRange());
    const size = high - low + 1;
    for (let n = 0; n < size; n++) {
      const port = low + ((this.cursor + n) % size);
      if (this.reserved.has(port) || (await this.probe(port)) === null) continue;
      this.cursor = (port - low + 1) % size;
      return this.take(port);
    }
    throw new Error(`no free TCP port for $PORT: all of ${low}-${high} are in use or reserved`);
  }

  /** Marks a known port as taken (a restored process keeps the port it had). */
  claim(port: number): void {
    this.reserved.add(port);
  }

  release(port: number): void {
    this.reserved.delete(port);
  }

  private take(port: number): number {
    this.reserved.add(port);
    return port;
  }
}

/** The kernel's ephemeral port range, where the kernel's own picks come from. */
function localPortRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high) && low > 0 && high >= low && high < 65536) return [low, high];
  } catch {
    // not Linux, or no /proc: the IANA dynamic range
  }
  return [49152, 65535];
}

export function probePort(port: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(null) : reject(err)));
    srv.listen(port, () => {
      const { port: bound } = srv.address() as { port: number };
      srv.close(() => resolve(bound));
    });
  });
}
