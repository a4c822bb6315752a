import t from 'tap';
import type { Page } from 'playwright-core';
import { agentWithArchives, api, waitForState } from '../helpers/agent.js';
import { haveChromium, launch, openPage } from '../helpers/browser.js';
import { waitFor } from '../helpers/wait.js';

// What the dashboard tells about processes, in real headless Chromium: the console's history,
// processes grouped by app, a crash loop's last error and exits, readable events, readiness,
// the release, the signal and metrics controls, and a small diagram whose labels do not overlap.

t.setTimeout(300_000);

function fieldValue(page: Page, label: string) {
  return page.$$eval(
    '#detail-fields div',
    (divs, l) => divs.find((d) => d.querySelector('dt')?.textContent === l)?.querySelector('dd')?.textContent ?? null,
    label,
  );
}

t.test('history, grouping by app, a crash loop, events, readiness, release, signal and metrics', async (t) => {
  if (!haveChromium(t)) return;
  const { agent, serveApp } = await agentWithArchives(t, { backoffInitialMs: 300, backoffMaxMs: 600 });
  // Prints its history, then is quiet until signalled.
  const quiet = await serveApp(
    'quiet',
    'worker: for i in $(seq 1 60); do echo "early $i"; done; trap \'echo got usr1\' USR1; while true; do sleep 0.1; done\n',
  );
  const crash = await serveApp('crash', 'worker: echo starting; echo "boom: database unreachable" >&2; sleep 0.2; exit 3\n');
  const web = await serveApp(
    'web',
    `web: node -e "require('http').createServer((q, r) => r.end('ok')).listen(process.env.PORT, () => console.log('listening'))"\n`,
  );
  const create = (app: string, node: string, type: string, source: string) =>
    api('POST', `${agent.url}/create-process`, { app, node, process_type: type, source_url: source });
  t.equal((await create('alpha', 'worker.0', 'worker', quiet)).status, 201);
  t.equal((await create('alpha', 'web.0', 'web', web)).status, 201);
  t.equal((await create('beta', 'worker.0', 'worker', crash)).status, 201);
  // The history is written before the page opens.
  await waitFor(async () => {
    const r = await api('GET', `${agent.url}/process-events/alpha.worker.0?follow=false`);
    return r.text.includes('"early 60"');
  }, 'the quiet worker to print its history');
  const ready = await waitForState(`${agent.url}/process-status/alpha.web.0`, (d) => d.ready === true);

  const browser = await launch(t);
  const { page, errors } = await openPage(browser, `${agent.url}/ui#alpha.worker.0`);
  await page.locator('#live[data-state="live"]').waitFor();

  // Grouped by app, each app with its counts; processes named by node under it.
  await page.locator('.group[data-app="alpha"]').waitFor();
  await waitFor(async () => /2 processes/.test((await page.textContent('.group[data-app="alpha"]')) ?? ''), 'the alpha group');
  await waitFor(
    async () => (await page.textContent('.group[data-app="alpha"] .counts')) === '2 running',
    'alpha to count 2 running processes',
  );
  t.match(await page.textContent('.group[data-app="beta"]'), /beta\s*1 process/);
  const order = await page.$$eval('#list > .group:not([hidden]), #list > .row:not([hidden])', (els) =>
    els
      .map((e) => ({
        top: parseFloat((e as HTMLElement).style.top),
        text: e.classList.contains('group') ? `[${e.getAttribute('data-app')}]` : e.getAttribute('data-slug'),
      }))
      .sort((a, b) => a.top - b.top)
      .map((e) => e.text),
  );
  t.same(order, ['[alpha]', 'alpha.web.0', 'alpha.worker.0', '[beta]', 'beta.worker.0'], 'each app, then its processes');
  t.equal(await page.textContent('.row[data-slug="alpha.worker.0"] .slug'), 'worker.0', 'a process is named by its node under its app');
  // A group collapses and expands.
  await page.click('.group[data-app="alpha"]');
  await page.locator('.row[data-slug="alpha.worker.0"]').waitFor({ state: 'detached' });
  t.equal(await page.getAttribute('.group[data-app="alpha"]', 'aria-expanded'), 'false');
  await page.click('.group[data-app="alpha"]');
  await page.locator('.row[data-slug="alpha.worker.0"]').waitFor();

  // The console opens with the history, then goes on live.
  await page.waitForFunction(() => /early 60/.test(document.getElementById('console')!.textContent ?? ''));
  t.match(await page.textContent('#console'), /^early 1\nearly 2\n/, 'from the first line of the history, in order');
  await waitFor(async () => /alpha\.worker\.0: 60 lines · live/.test((await page.textContent('#console-note')) ?? ''), 'the console note');

  // The signal control sends to the process group; the answer shows up live in the console.
  await page.locator('#signal-box').waitFor();
  await page.selectOption('#signal-name', 'SIGUSR1');
  await page.click('#btn-signal');
  await page.waitForFunction(() => /got usr1/.test(document.getElementById('console')!.textContent ?? ''));
  t.match(await page.textContent('#action-note'), /sent SIGUSR1/);
  const lines = ((await page.textContent('#console')) ?? '').split('\n');
  t.equal(lines.filter((l) => l === 'early 60').length, 1, 'no line twice');
  t.ok(lines.indexOf('got usr1') > lines.indexOf('early 60'), 'live after the history');

  // The release: short content hash and where it came from.
  t.match(await fieldValue(page, 'release'), /^[0-9a-f]{12} from http:\/\/127\.0\.0\.1:\d+\/quiet\.tgz$/);

  // Metrics, offered by the agent's metrics link.
  await page.click('#tab-metrics');
  await page.locator('#metrics table.stages').waitFor();
  t.same(await page.$$eval('#metrics tbody th', (ths) => ths.map((th) => th.textContent)), ['build', 'run']);
  await page.click('#tab-console');

  // Readiness of a web process.
  await page.click('.row[data-slug="alpha.web.0"]');
  await waitFor(async () => (await page.textContent('#detail-ready')) === 'ready', 'the web process to show ready');
  t.match(await page.getAttribute('#detail-ready', 'title'), new RegExp(`port ${ready.port}`));

  // A crash loop: its last error and its last exits, each with the line it printed before.
  await page.click('.row[data-slug="beta.worker.0"]');
  await page.locator('#crash:not([hidden])').waitFor();
  await waitFor(async () => /^Crash loop: \d+ restarts$/.test((await page.textContent('#crash-title')) ?? ''), 'the crash loop title');
  t.match(await page.textContent('#crash-error'), /last error: process exited with code 3/);
  await waitFor(async () => (await page.locator('#crash-exits li').count()) >= 2, 'two exits listed');
  const exits = await page.$$eval('#crash-exits li', (lis) => lis.map((li) => li.textContent ?? ''));
  for (const e of exits) t.match(e, /^\d\d:\d\d:\d\dexited with code 3 after [\d.]+ sboom: database unreachable$/);
  t.equal(await fieldValue(page, 'last error'), null, 'the last error is in the crash box, not twice');
  // It opened with its history too: every run's lines so far.
  await page.waitForFunction(() => (document.getElementById('console')!.textContent ?? '').split('boom').length > 2);

  // Events: time, kind, detail; exits and restarts marked; no numbering, no JSON.
  await page.click('#tab-events');
  await page.locator('#events li.ev-exit').first().waitFor();
  await page.locator('#events li.ev-restart').first().waitFor();
  const rows = await page.$$eval('#events li', (lis) =>
    lis.map((li) => ({
      time: li.querySelector('time')?.textContent ?? '',
      kind: li.querySelector('.kind')?.textContent ?? '',
      detail: li.querySelector('.detail')?.textContent ?? '',
      cls: li.className,
    })),
  );
  t.ok(rows.length > 5, `${rows.length} events`);
  for (const r of rows) {
    t.match(r.time, /^\d\d:\d\d:\d\d$/, 'a time');
    t.notMatch(r.detail, /^\{|"\w+":/, `no JSON: ${r.detail}`);
  }
  t.equal(rows[0].kind, 'created');
  const exit = rows.find((r) => r.kind === 'exited')!;
  t.match(exit.detail, /^exited with code 3 after [\d.]+ s$/);
  t.equal(exit.cls, 'ev-exit');
  t.match(rows.find((r) => r.kind === 'restart')!.detail, /^in [\d.]+ (s|ms) \(restart \d+\)$/);
  t.equal(await page.$eval('#events', (el) => getComputedStyle(el).listStyleType), 'none', 'not numbered');
  t.notOk(
    rows.some((r) => /#\d/.test(r.kind + r.time)),
    'no event ids shown',
  );

  t.same(
    errors.filter((e) => !/status of 409/.test(e)),
    [],
    'no errors in the browser console',
  );
});

t.test('the diagram: small, and no label overlaps a state or another label at the usual window sizes', async (t) => {
  if (!haveChromium(t)) return;
  const { agent } = await agentWithArchives(t);
  const browser = await launch(t);
  for (const [width, height] of [
    [1280, 720],
    [1440, 900],
    [1920, 1080],
  ]) {
    const { page, errors, context } = await openPage(browser, 'about:blank');
    await page.setViewportSize({ width, height });
    await page.goto(`${agent.url}/ui`);
    await page.locator('#diagram svg').waitFor();
    const boxes = await page.evaluate(() => {
      const rect = (e: Element) => {
        const r = e.getBoundingClientRect();
        return {
          x: r.x,
          y: r.y,
          w: r.width,
          h: r.height,
          what:
            e.closest('[data-edge], [data-state]')?.getAttribute('data-edge') ??
            e.closest('[data-state]')?.getAttribute('data-state') ??
            '',
        };
      };
      return {
        labels: [...document.querySelectorAll('#diagram .label-bg')].map(rect),
        texts: [...document.querySelectorAll('#diagram .label text')].map(rect),
        nodes: [...document.querySelectorAll('#diagram .node rect')].map(rect),
        panel: document.getElementById('diagram-panel')!.getBoundingClientRect().height,
      };
    });
    const overlap = (a: { x: number; y: number; w: number; h: number }, b: typeof a) =>
      Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x) > 0.5 && Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y) > 0.5;
    const clashes: string[] = [];
    boxes.labels.forEach((a, i) => {
      for (const b of boxes.labels.slice(i + 1)) if (overlap(a, b)) clashes.push(`${a.what} / ${b.what}`);
      for (const n of boxes.nodes) if (overlap(a, n)) clashes.push(`${a.what} / state ${n.what}`);
    });
    t.same(clashes, [], `${width}×${height}: no label overlaps another or a state`);
    t.equal(boxes.nodes.length, 7, 'one box per state');
    t.ok(boxes.labels.length >= 14, `${boxes.labels.length} labels`);
    // Each label's text stays inside its own background.
    const inside = boxes.texts.every((tx) =>
      boxes.labels.some((l) => tx.x >= l.x - 1 && tx.x + tx.w <= l.x + l.w + 1 && tx.y >= l.y - 2 && tx.y + tx.h <= l.y + l.h + 2),
    );
    t.ok(inside, 'every label text fits its background');
    t.ok(boxes.panel <= 260, `${width}×${height}: the diagram takes ${Math.round(boxes.panel)} px of ${height}`);
    const smallest = Math.min(...boxes.texts.map((x) => x.h));
    t.ok(smallest >= 10, `${width}×${height}: labels are readable (${smallest.toFixed(1)} px tall)`);
    // It can be hidden, and stays hidden after a reload.
    await page.click('#diagram-toggle');
    t.ok(await page.locator('#diagram svg').isHidden(), 'hidden on request');
    await page.reload();
    await page.locator('#live[data-state="live"]').waitFor();
    t.ok(await page.locator('#diagram svg').isHidden(), 'still hidden after a reload');
    await page.click('#diagram-toggle');
    t.same(errors, [], 'no errors in the browser console');
    await context.close();
  }
});
