import type { Socket } from 'node:net';

// Precomputed headers of short text frames (FIN + opcode 1, unmasked, length < 126).
const SHORT_HEADERS = Array.from({ length: 126 }, (_, n) => String.fromCharCode(0x81, n));

/**
 * Writes WebSocket text frames (RFC 6455 §5.2, server to client: unmasked) straight to the
 * socket, every frame of one tick in a single write. ws's send() costs two socket writes
 * (header, payload) and their bookkeeping per frame: for a burst of short lines that is most
 * of the agent's CPU, and a client that stops reading would hold ~200 bytes of heap per queued
 * line instead of the line's bytes. Only valid on a connection without extensions
 * (perMessageDeflate off), and not to be mixed with ws.send() within a tick.
 */
export class TextFrameWriter {
  private lines: string[] = [];
  private scheduled = false;

  constructor(private readonly socket: Socket) {}

  send(text: string): void {
    this.lines.push(text);
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flush);
    }
  }

  /** Lines accepted this tick, not yet handed to the socket. */
  get pendingLines(): number {
    return this.lines.length;
  }

  readonly flush = (): void => {
    this.scheduled = false;
    const lines = this.lines;
    if (!lines.length) return;
    this.lines = [];
    if (this.socket.destroyed) return;
    this.socket.write(encodeTextFrames(lines));
  };
}

/** The frames of `lines`, one text frame each, in one buffer. */
export function encodeTextFrames(lines: string[]): Buffer {
  const sizes = new Array<number>(lines.length);
  let total = 0;
  for (let i = 0; i < lines.length; i++) {
    const n = Buffer.byteLength(lines[i], 'utf8');
    sizes[i] = n;
    total += n + (n < 126 ? 2 : n < 65536 ? 4 : 10);
  }
  const buf = Buffer.allocUnsafe(total);
  let at = 0;
  // Short ASCII lines (the common case) are gathered into one string, header bytes included,
  // and encoded with a single latin1 write; anything else is written frame by frame.
  let ascii = '';
  const flushAscii = () => {
    if (ascii) at += buf.write(ascii, at, 'latin1');
    ascii = '';
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const n = sizes[i];
    if (n < 126 && n === line.length) {
      ascii += SHORT_HEADERS[n] + line;
      continue;
    }
    flushAscii();
    buf[at++] = 0x81;
    if (n < 126) {
      buf[at++] = n;
    } else if (n < 65536) {
      buf[at++] = 126;
      buf.writeUInt16BE(n, at);
      at += 2;
    } else {
      buf[at++] = 127;
      buf.writeUInt32BE(0, at);
      buf.writeUInt32BE(n, at + 4);
      at += 8;
    }
    at += buf.write(line, at, 'utf8');
  }
  flushAscii();
  return buf;
}
