// The floor for the 1M-line scenario: a bare `ws` server that spawns the same `seq` when a
// client connects, splits its output on "\n" and sends each line as a frame, corked per chunk.
// No supervision, no state machine, no HTTP API. Run as its own process; prints its URL.
import { spawn } from 'node:child_process';
import { WebSocketServer } from 'ws';

const lines = process.argv[2] ?? '1000000';
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });

wss.on('connection', (ws) => {
  const child = spawn('seq', [lines], { stdio: ['ignore', 'pipe', 'ignore'] });
  const socket = (ws as unknown as { _socket: import('node:net').Socket })._socket;
  let partial = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    socket.cork();
    for (const line of parts) ws.send(line);
    process.nextTick(() => socket.uncork());
  });
});

wss.on('listening', () => {
  const { port } = wss.address() as { port: number };
  process.stdout.write(`ws://127.0.0.1:${port}/\n`);
});
