// Talking to the agent: JSON over fetch and WebSocket URLs, with the agent's token when it
// asks for one (401). The token is asked for once and kept in sessionStorage (this tab only).

const KEY = 'drover.token';
let token = sessionStorage.getItem(KEY) || '';
let asking = null;

/** Shows the token dialog; concurrent 401s share one prompt. */
function askToken(rejected) {
  asking ??= new Promise((resolve) => {
    const dialog = document.getElementById('token-dialog');
    const form = document.getElementById('token-form');
    const input = document.getElementById('token-input');
    document.getElementById('token-why').textContent = rejected
      ? 'The agent rejected the token. Enter it again.'
      : 'This agent requires a token. It is kept for this tab only.';
    input.value = '';
    form.onsubmit = (e) => {
      e.preventDefault();
      if (!input.value) return;
      token = input.value;
      sessionStorage.setItem(KEY, token);
      dialog.close();
      asking = null;
      resolve();
    };
    dialog.oncancel = (e) => e.preventDefault(); // nothing works without it
    dialog.showModal();
    input.focus();
  });
  return asking;
}

export class ApiError extends Error {
  constructor(status, body) {
    const errors = Array.isArray(body?.errors) ? body.errors : [];
    super(errors.map((e) => e.detail).join('; ') || `HTTP ${status}`);
    this.status = status;
    this.errors = errors;
  }
}

/** A JSON request; resolves to the parsed body, throws ApiError for 4xx/5xx. */
export async function request(method, url, body) {
  for (;;) {
    const headers = { accept: 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (res.status === 401) {
      await askToken(Boolean(token));
      continue;
    }
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) throw new ApiError(res.status, json);
    return json;
  }
}

/** Follows an NDJSON stream (e.g. a process's event log), one parsed object per line, until `signal` aborts. */
export async function followNdjson(url, onObject, signal) {
  for (;;) {
    const headers = { accept: 'application/x-ndjson' };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(url, { headers, signal });
    if (res.status === 401) {
      await askToken(Boolean(token));
      continue;
    }
    if (!res.ok || !res.body) throw new ApiError(res.status, await res.json().catch(() => undefined));
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      const lines = (rest + value).split('\n');
      rest = lines.pop();
      for (const line of lines) {
        if (!line.trim()) continue;
        try {
          onObject(JSON.parse(line));
        } catch {
          // a line that is not JSON is not an event
        }
      }
    }
  }
}

/** Browsers cannot set headers on WebSockets or EventSource: the token goes in the query. */
export function withToken(url) {
  if (!token) return url;
  const u = new URL(url, location.href);
  u.searchParams.set('token', token);
  return u.toString();
}

/** The ws:// twin of an http:// link (the inspect link serves both). */
export function toWs(url) {
  const u = new URL(url, location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}
