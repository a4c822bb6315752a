// A fake systemd notify socket: a Unix datagram socket (python3, since Node cannot open one)
// that records every message it receives, for tests of `drover serve` under Type=notify.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './wait.js';

const LISTENER = `
import json, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path.replace('@', '\\0', 1) if path.startswith('@') else path)
print(json.dumps({'listening': True}), flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps({'message': data.decode('utf-8', 'replace')}), flush=True)
`;

export interface NotifySocket {
  /** The value for NOTIFY_SOCKET. */
  path: string;
  /** Every datagram received so far, in order. */
  messages: string[];
  close(): Promise<void>;
}

export async function fakeNotifySocket(opts: { abstract?: boolean } = {}): Promise<NotifySocket> {
  const dir = mkdtempSync(join(tmpdir(), 'drover-notify-'));
  const path = opts.abstract ? `@drover-test-${process.pid}-${Date.now()}` : join(dir, 'notify.sock');
  const py = spawn('python3', ['-c', LISTENER, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  const messages: string[] = [];
  let listening = false;
  let buf = '';
  py.stdout!.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const rec = JSON.parse(buf.slice(0, nl)) as { listening?: boolean; message?: string };
      buf = buf.slice(nl + 1);
      if (rec.listening) listening = true;
      if (rec.message !== undefined) messages.push(rec.message);
    }
  });
  const exited = new Promise((r) => py.once('exit', r));
  await waitFor(() => listening, 'the fake notify socket to listen', 30_000);
  return {
    path,
    messages,
    async close() {
      py.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
