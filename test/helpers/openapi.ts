// Checks answers against the agent's own OpenAPI document with Ajv (JSON Schema 2020-12, the
// dialect of OpenAPI 3.1) and ajv-formats.
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { RouteTable } from '../../lib/http/route-table.js';

// ajv-formats is CommonJS with a default export.
const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

type Doc = {
  paths: Record<string, Record<string, { responses: Record<string, any>; requestBody?: any }>>;
  components: { schemas: Record<string, unknown> };
};

/** `/process-status/{slug}` → `/process-status/:slug`. */
export const h3Path = (p: string) => p.replace(/\{([^}]+)\}/g, ':$1');

export function openApiChecker(doc: Doc) {
  const ajv = new Ajv2020({ strict: true, allErrors: true, strictTypes: false, strictTuples: false });
  addFormats(ajv);
  ajv.addKeyword('x-item-schema');
  // The components as one schema, so "#/components/schemas/X" refs resolve inside Ajv.
  const rewrite = (s: unknown) => JSON.parse(JSON.stringify(s).replaceAll('"#/components/schemas/', '"components#/$defs/'));
  ajv.addSchema({ $id: 'components', $defs: rewrite(doc.components.schemas) });
  const cache = new Map<unknown, ValidateFunction>();
  const compile = (schema: unknown): ValidateFunction => {
    let v = cache.get(schema);
    if (!v) cache.set(schema, (v = ajv.compile(rewrite(schema))));
    return v;
  };
  // Matching a concrete path to a documented one, with the same matcher the server labels requests by.
  const table = new RouteTable();
  for (const [path, ops] of Object.entries(doc.paths))
    for (const method of Object.keys(ops))
      table.route({
        method: method.toUpperCase() as 'GET',
        path: h3Path(path),
        operationId: `${method} ${path}`,
        summary: '',
        tag: '',
        responses: {},
        handler: () => null,
      });

  return {
    compile,
    /** The documented operation of a request, or null. */
    operation(method: string, pathname: string) {
      const path = table.match(method, pathname);
      if (path === null) return null;
      const p = Object.keys(doc.paths).find((k) => h3Path(k) === path)!;
      return doc.paths[p][method.toLowerCase()] ?? null;
    },
    /**
     * Problems with an answer (empty when it matches the document): its status must be documented
     * (or `default`), its media type listed, and a JSON body valid against the schema.
     */
    check(method: string, pathname: string, status: number, contentType: string | null, body: unknown): string[] {
      const op = this.operation(method, pathname);
      if (!op) return [`${method} ${pathname} is not in the document`];
      const answer = op.responses[String(status)] ?? op.responses.default;
      if (!answer) return [`${method} ${pathname}: status ${status} is not documented`];
      if (!answer.content)
        return contentType && body !== undefined && body !== '' ? [`${method} ${pathname} ${status}: no body documented`] : [];
      const media = (contentType ?? '').split(';')[0].trim();
      const key = Object.keys(answer.content).find((k) => k.split(';')[0].trim() === media);
      if (!key)
        return [`${method} ${pathname} ${status}: media type ${media} is not documented (${Object.keys(answer.content).join(', ')})`];
      const schema = answer.content[key].schema;
      if (!schema || media !== 'application/json') return [];
      const v = compile(schema);
      return v(body) ? [] : [`${method} ${pathname} ${status}: ${ajv.errorsText(v.errors)}`];
    },
    /** The schema of each line / event / frame of a stream answer. */
    itemSchema(method: string, pathname: string, status: number): ValidateFunction | null {
      const a = this.operation(method, pathname)?.responses[String(status)];
      const s = a?.content ? (Object.values(a.content)[0] as any)?.['x-item-schema'] : a?.['x-item-schema'];
      return s ? compile(s) : null;
    },
    errorsText: (v: ValidateFunction) => ajv.errorsText(v.errors),
  };
}
