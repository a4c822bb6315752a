import { request } from './http.js';
import { until } from './wait.js';

function withQuery(url: string, query: string): string {
  return `${url}${url.includes('?') ? '&' : '?'}${query}`;
}

/** The id of the last event in a process's log so far (NDJSON via the `events` link, not followed). */
export async function lastEventId(events: string): Promise<number> {
  const res = await request('GET', withQuery(events, 'follow=false'));
  if (res.status !== 200) throw new Error(`GET ${events}: HTTP ${res.status}`);
  const last = res.text.trimEnd().split('\n').at(-1);
  return last ? (JSON.parse(last) as { id: number }).id : 0;
}

/**
 * Waits until the log serves an output line `text` after event `since`: reading only the tail
 * (readers only ever see events that were written), so it measures persistence.
 */
export function untilLogged(events: string, since: number, text: string, timeoutMs: number): Promise<true> {
  const probe = withQuery(events, `since=${since}&follow=false`);
  const needle = `"text":${JSON.stringify(text)}`;
  return until(
    async () => {
      const res = await request('GET', probe);
      return res.status === 200 && res.text.includes(needle);
    },
    `line ${JSON.stringify(text)} in the event log`,
    timeoutMs,
    5,
  ) as Promise<true>;
}
