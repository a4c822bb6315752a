/** Links are absolute, built from the Host the caller used, so they work through any address. */
export interface Base {
  http: string;
  ws: string;
}

/** A Host header that is not a plain host[:port] (it would end up inside every link) falls back to the agent's own address. */
export function baseFromHost(host: string | null | undefined, fallback: string): Base {
  const h = host && /^[A-Za-z0-9.\-:[\]]+$/.test(host) ? host : fallback;
  return { http: `http://${h}`, ws: `ws://${h}` };
}
