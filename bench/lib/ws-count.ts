import { WebSocket } from 'ws';

/**
 * A WebSocket client that checks every frame is the next number ("1", "2", ...), as `seq`
 * prints them, and notes when the last one arrives. The same client measures drover and the
 * bare baseline.
 */
export class LineCounter {
  readonly ws: WebSocket;
  readonly opened: Promise<void>;
  readonly done: Promise<number>;
  received = 0;

  constructor(url: string, expected: number) {
    this.ws = new WebSocket(url, { perMessageDeflate: false });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    this.done = new Promise((resolve, reject) => {
      this.ws.on('message', (data: Buffer) => {
        const n = this.received + 1;
        // Only frames the process printed count; anything else (lost or reordered lines) is a failure.
        if (data.toString() !== String(n)) {
          reject(new Error(`frame ${n} was ${JSON.stringify(data.toString().slice(0, 80))}`));
          this.ws.terminate();
          return;
        }
        this.received = n;
        if (n === expected) resolve(performance.now());
      });
      this.ws.on('close', (code, reason) => {
        if (this.received < expected)
          reject(new Error(`socket closed (${code} ${reason.toString()}) after ${this.received} of ${expected} frames`));
      });
    });
    this.done.catch(() => {}); // observed by the caller; never an unhandled rejection in between
  }

  close(): void {
    this.ws.terminate();
  }
}
