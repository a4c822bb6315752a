import { once } from 'node:events';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { followLog } from '../store/event-log/follow.js';
import { outputText } from '../store/event-log/line.js';
import type { EventLog } from '../store/event-log/log.js';
import { TextFrameWriter } from './frames.js';

export interface Replay {
  since?: number;
  tail?: number;
}

const MAX_TAIL = 1_000_000;

/** `?since=ID` / `?tail=N` of an attach request; null for a plain (live only) attach. Throws a message for bad values. */
export function parseReplay(query: URLSearchParams): Replay | null {
  const since = query.get('since');
  const tail = query.get('tail');
  if (since === null && tail === null) return null;
  if (since !== null && tail !== null) throw new Error('tail: cannot be combined with since');
  const n = (v: string, field: string, max: number) => {
    if (!/^\d{1,15}$/.test(v) || Number(v) > max)
      throw new Error(`${field}: must be an integer from 0 to ${max}, got ${JSON.stringify(v.slice(0, 40))}`);
    return Number(v);
  };
  return since !== null ? { since: n(since, 'since', Number.MAX_SAFE_INTEGER) } : { tail: n(tail!, 'tail', MAX_TAIL) };
}

/**
 * Sends the output lines of the log after `since` (or its last `tail` lines), then follows it
 * live: one reader over numbered events, so there is no gap and no duplicate at the switch.
 * A slow client only slows its own reading; it never holds more than a batch in memory.
 */
export async function replayOutput(ws: WebSocket, log: EventLog, replay: Replay, maxBufferedBytes: number): Promise<void> {
  const ac = new AbortController();
  ws.on('close', () => ac.abort());
  const socket = (ws as unknown as { _socket: Socket })._socket;
  const frames = new TextFrameWriter(socket);
  const since = replay.since ?? (await log.findTail(replay.tail ?? 0, 'output')) - 1;
  for await (const batch of followLog(log, since, { follow: true, signal: ac.signal })) {
    for (const line of batch ?? []) {
      const text = outputText(line);
      if (text !== undefined) frames.send(text);
    }
    frames.flush();
    // Read on only once the socket has taken most of what is queued (or the client is gone).
    if (ws.bufferedAmount > maxBufferedBytes / 4 && socket.writableNeedDrain && !ac.signal.aborted)
      await once(socket, 'drain', { signal: ac.signal }).catch(() => {});
  }
  if (!ac.signal.aborted) ws.close(1000, 'process deleted');
}
