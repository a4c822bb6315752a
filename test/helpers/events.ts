/** Reads an NDJSON event stream until `enough(events)` or its end, then disconnects. */
export async function readEvents(
  url: string,
  enough: (events: any[]) => boolean = () => false,
  headers: Record<string, string> = {},
): Promise<{ events: any[]; status: number; headers: Headers; ended: boolean }> {
  const ac = new AbortController();
  const res = await fetch(url, { signal: ac.signal, headers });
  const events: any[] = [];
  let ended = false;
  if (!res.ok || !res.body) {
    const body = await res.text();
    return { events: [JSON.parse(body)], status: res.status, headers: res.headers, ended: true };
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        ended = true;
        break;
      }
      buf += decoder.decode(value, { stream: true });
      for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
        events.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
      if (enough(events)) break;
    }
  } finally {
    ac.abort();
  }
  return { events, status: res.status, headers: res.headers, ended };
}

/** The ids are 1 apart: no gap, no duplicate, in order. */
export function consecutive(ids: number[]): boolean {
  return ids.every((id, i) => i === 0 || id === ids[i - 1] + 1);
}
