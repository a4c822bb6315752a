import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import { getRouterParam } from 'h3';
import { errorAnswer, type RouteTable } from './route-table.js';
import { ApiError } from './errors.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

// The dashboard's own files: the page and the scripts and styles it loads, by exact raw path.
const ASSET_PATH = /^\/ui(\/[a-z][a-z0-9-]*\.(html|js|css|svg))?$/;

/**
 * True for a request for one of the dashboard's files. They hold no data (everything the page
 * fetches needs the token) and a browser opening a page cannot send a header, so the auth gate
 * lets these through: the page then asks for the token itself.
 */
export function isDashboardAsset(method: string | undefined, url: string | undefined): boolean {
  return (method === 'GET' || method === 'HEAD') && ASSET_PATH.test((url ?? '').split('?')[0]);
}

/**
 * The dashboard's files live in lib/ui of the package, which is two levels up from this file
 * when run from source (lib/http) and three when compiled (dist/lib/http): look for it.
 */
export function uiDirectory(from = import.meta.dirname): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'lib', 'ui');
    if (existsSync(join(candidate, 'index.html'))) return candidate;
    if (dirname(dir) === dir) throw new Error(`the dashboard files (lib/ui) were not found above ${from}`);
  }
}

interface Asset {
  body: Buffer;
  type: string;
}

/** Reads the (few, small) dashboard files once; only files listed there can ever be served. */
async function loadAssets(dir: string): Promise<Map<string, Asset>> {
  const assets = new Map<string, Asset>();
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const type = TYPES[extname(entry.name)];
    if (entry.isFile() && type) assets.set(entry.name, { body: await readFile(join(dir, entry.name)), type });
  }
  return assets;
}

/** `GET /ui` (the dashboard page) and `GET /ui/FILE` (its scripts and styles). No build step. */
export function registerUi(table: RouteTable, dir?: string): void {
  let assets: Promise<Map<string, Asset>> | undefined;
  const serve = async (name: string) => {
    assets ??= loadAssets(dir ?? uiDirectory()).catch((err) => {
      assets = undefined; // a packaging problem: report it on every request, don't cache it
      throw err;
    });
    const asset = (await assets).get(name);
    if (!asset) throw new ApiError(404, `no dashboard file ${JSON.stringify(name.slice(0, 80))}`);
    return new Response(new Uint8Array(asset.body), {
      headers: { 'content-type': asset.type, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' },
    });
  };
  const page = {
    description: 'The file',
    content: { 'text/html': null, 'text/javascript': null, 'text/css': null, 'image/svg+xml': null },
  };
  table.route({
    method: 'GET',
    path: '/ui',
    operationId: 'dashboard',
    tag: 'dashboard',
    summary: 'The dashboard page (served without the token: it asks for it)',
    access: 'public',
    responses: { 200: { description: 'The page', content: { 'text/html': null } } },
    handler: () => serve('index.html'),
  });
  table.route({
    method: 'GET',
    path: '/ui/:file',
    operationId: 'dashboardFile',
    tag: 'dashboard',
    summary: 'A script, style or image of the dashboard (served without the token)',
    access: 'public',
    params: [
      {
        name: 'file',
        in: 'path',
        description: 'e.g. app.js',
        schema: { type: 'string', pattern: '^[a-z][a-z0-9-]*\\.(html|js|css|svg)$' },
      },
    ],
    responses: { 200: page, 404: errorAnswer('No such file') },
    handler: (event) => serve(getRouterParam(event, 'file') ?? ''),
  });
}
