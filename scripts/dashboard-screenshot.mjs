// Takes docs/dashboard.png: an agent in this process (the compiled dist/), three small apps
// deployed to it (a web + worker app, a second web app, one in a crash loop), and the
// dashboard in headless Chromium (Debian's /usr/bin/chromium through playwright-core).
//
//   npm run build && node scripts/dashboard-screenshot.mjs [OUT.png] [WIDTHxHEIGHT]
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { create as tarCreate } from 'tar';

const root = fileURLToPath(new URL('..', import.meta.url));
const { defaults } = await import(pathToFileURL(join(root, 'dist/lib/agent/config.js')).href);
const { startAgent } = await import(pathToFileURL(join(root, 'dist/lib/http/server.js')).href);

const out = process.argv[2] ?? join(root, 'docs', 'dashboard.png');
const [width, height] = (process.argv[3] ?? '1440x900').split('x').map(Number);
const work = mkdtempSync(join(tmpdir(), 'drover-shot-'));

const SERVER = `const http = require('node:http');
const port = Number(process.env.PORT);
console.log('booting ' + (process.env.APP_NAME || 'app'));
setTimeout(() => http.createServer((req, res) => { console.log(req.method + ' ' + req.url + ' 200'); res.end('ok\\n'); })
  .listen(port, () => console.log('listening on ' + port)), 300);
`;
const WORKER = `let n = 0; setInterval(() => console.log('job ' + (++n) + ' done in ' + (20 + (n * 37) % 80) + ' ms'), 700);\n`;
const CRASH = `console.log('connecting to ' + (process.env.REDIS_URL || '(no REDIS_URL)'));
setTimeout(() => { console.error('Error: connect ECONNREFUSED 127.0.0.1:6379'); process.exit(1); }, 150);
`;

async function app(name, files) {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
  const file = join(work, `${name}.tgz`);
  await tarCreate({ gzip: true, file, cwd: dir, portable: true }, Object.keys(files));
  return pathToFileURL(file).href;
}

const agent = await startAgent(
  {
    ...defaults,
    host: '127.0.0.1',
    port: 0,
    stateDir: join(work, 'state'),
    allowFileUrls: true,
    backoffInitialMs: 500,
    backoffMaxMs: 4000,
  },
  () => {},
);
const post = async (path, body) => {
  const res = await fetch(`${agent.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return res.json();
};
try {
  const shop = await app('shop', { Procfile: 'web: node server.js\nworker: node worker.js\n', 'server.js': SERVER, 'worker.js': WORKER });
  const blog = await app('blog', { Procfile: 'web: node server.js\n', 'server.js': SERVER });
  const jobs = await app('jobs', { Procfile: 'worker: node worker.js\n', 'worker.js': CRASH });
  for (const [app, node, type, source, env] of [
    ['shop', 'web.0', 'web', shop, { APP_NAME: 'shop' }],
    ['shop', 'web.1', 'web', shop, { APP_NAME: 'shop' }],
    ['shop', 'worker.0', 'worker', shop, { APP_NAME: 'shop' }],
    ['blog', 'web.0', 'web', blog, { APP_NAME: 'blog' }],
    ['jobs', 'worker.0', 'worker', jobs, {}],
  ])
    await post('/create-process', { app, node, process_type: type, source_url: source, env });
  await new Promise((r) => setTimeout(r, 2500));
  for (const path of ['/', '/cart', '/items/42', '/checkout'])
    await fetch(
      `${agent.url.replace(/:\d+$/, '')}:${(await (await fetch(`${agent.url}/process-status/shop.web.0`)).json()).port}${path}`,
    ).catch(() => {});
  await new Promise((r) => setTimeout(r, 3000));

  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  try {
    const page = await (await browser.newContext({ viewport: { width, height } })).newPage();
    await page.goto(`${agent.url}/ui#${process.env.SELECT ?? 'shop.web.0'}`);
    await page.locator('#live[data-state="live"]').waitFor();
    await page.waitForTimeout(1500);
    if (process.env.TAB) await page.click(`#tab-${process.env.TAB}`);
    await page.waitForTimeout(800);
    await page.screenshot({ path: out });
    process.stdout.write(`${out}\n`);
  } finally {
    await browser.close();
  }
} finally {
  await agent.close();
  rmSync(work, { recursive: true, force: true });
}
