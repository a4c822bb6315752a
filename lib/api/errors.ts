/** What every refused request answers: `{"errors": [{status, detail, field?}]}`. */
export function errorBody(status: number, detail: string, field?: string) {
  return { errors: [{ status, detail, ...(field ? { field } : {}) }] };
}
