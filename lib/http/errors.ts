/** An expected failure of a request: becomes `{"errors": [{status, detail, field?}]}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    detail: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
  }
}

export function errorBody(status: number, detail: string, field?: string) {
  return { errors: [{ status, detail, ...(field ? { field } : {}) }] };
}

export function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
  });
}
