import t from 'tap';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { encodeTextFrames, TextFrameWriter } from '../../lib/http/frames.js';

t.test('frames written by TextFrameWriter are read by a real ws client, one message per line', async (t) => {
  const lines = [
    '',
    'a',
    'x'.repeat(125),
    'y'.repeat(126),
    'z'.repeat(65535),
    'w'.repeat(65536),
    'caf\u00e9',
    '\u00e9'.repeat(63), // 126 bytes: the 16-bit length form, though only 63 characters
    'smile \u{1F642}',
    'ascii again',
  ];
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  t.teardown(() => new Promise((r) => wss.close(r)));
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) => {
    const frames = new TextFrameWriter((ws as unknown as { _socket: Socket })._socket);
    for (const l of lines) frames.send(l);
    t.equal(frames.pendingLines, lines.length, 'nothing is written before the end of the tick');
    // A second tick, as a second chunk of output would be.
    setImmediate(() => frames.send('second tick'));
  });
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  const got: string[] = [];
  await new Promise<void>((resolve, reject) => {
    client.on('message', (data, isBinary) => {
      t.notOk(isBinary, 'text frames');
      got.push(data.toString());
      if (got.length === lines.length + 1) resolve();
    });
    client.on('error', reject);
  });
  client.close();
  t.same(got, [...lines, 'second tick']);
});

t.test('frame headers use the shortest length form', async (t) => {
  t.same([...encodeTextFrames(['hi'])], [0x81, 2, 0x68, 0x69]);
  t.same([...encodeTextFrames(['a'.repeat(126)]).subarray(0, 4)], [0x81, 126, 0, 126]);
  t.same([...encodeTextFrames(['a'.repeat(65536)]).subarray(0, 10)], [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
  t.equal(encodeTextFrames(['\u00e9']).length, 4, 'payload length in bytes, not characters');
});
