import t from 'tap';
import type { Page } from 'playwright-core';
import { agentWithArchives, api } from '../helpers/agent.js';
import { haveChromium, launch, openPage } from '../helpers/browser.js';
import { waitFor } from '../helpers/wait.js';

// A real browser next to an agent and its children: give a slow, shared machine room.
t.setTimeout(300_000);

// The dashboard under load, in real headless Chromium: many processes, a flood of output.

/** Waits until the detail panel shows `value` for field `label`. */
function fieldValue(page: Page, label: string) {
  return page.$$eval(
    '#detail-fields div',
    (divs, l) => divs.find((d) => d.querySelector('dt')?.textContent === l)?.querySelector('dd')?.textContent ?? null,
    label,
  );
}

t.test('1000 processes: the list stays virtual, counts and filter stay right', async (t) => {
  if (!haveChromium(t)) return;
  // Failing downloads: a thousand actors cycling through their states without a thousand children.
  const { agent, archives } = await agentWithArchives(t, { backoffInitialMs: 600_000, backoffMaxMs: 600_000 });
  const source = `${archives.url}/missing.tgz`;
  const N = 1000;
  for (let i = 0; i < N; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, N - i) }, (_, k) =>
        api('POST', `${agent.url}/create-process`, {
          app: 'many',
          node: `w.${String(i + k).padStart(4, '0')}`,
          process_type: 'w',
          source_url: source,
        }),
      ),
    );
  }
  const browser = await launch(t);
  const { page, errors } = await openPage(browser, `${agent.url}/ui`);
  await page.locator('#live[data-state="live"]').waitFor();
  await page.waitForFunction((n) => document.getElementById('shown')!.textContent === `${n} processes`, N);
  const rows = await page.locator('.list .row:not([hidden])').count();
  t.ok(rows > 10 && rows < 100, `only the rows in view exist (${rows} of ${N})`);
  await page.waitForFunction(
    (n) => [...document.querySelectorAll('#diagram .node .count')].reduce((s, c) => s + Number(c.textContent), 0) === n,
    N,
  );

  await page.$eval('#list', (el) => (el.scrollTop = el.scrollHeight));
  await page.locator('.row[data-slug="many.w.0999"]').waitFor();
  await page.click('.row[data-slug="many.w.0999"]');
  t.equal(await page.textContent('#detail-slug'), 'many.w.0999');
  await waitFor(async () => /HTTP 404/.test((await fieldValue(page, 'last error')) ?? ''), 'the download error shown');

  // Clicking a state in the diagram lists the processes in it.
  // After one immediate retry, every process waits (600 s) in `restarting`.
  await page.waitForFunction(
    (n) => document.querySelector('#diagram g.node[data-state="restarting"] .count')!.textContent === String(n),
    N,
  );
  await page.click('#diagram g.node[data-state="restarting"]');
  t.equal(await page.inputValue('#filter'), 'restarting');
  await page.waitForFunction(() => document.getElementById('shown')!.textContent === '1000 of 1000');
  const rowStates = await page.$$eval('.list .row:not([hidden]) .state', (els) => els.map((e) => e.textContent));
  t.ok(rowStates.length > 0 && rowStates.every((s) => s === 'restarting'), 'only restarting processes are listed');
  await page.fill('#filter', 'w.09');
  await page.waitForFunction(() => document.getElementById('shown')!.textContent === '100 of 1000');
  t.same(errors, [], 'no errors in the browser console');
});

t.test('a process printing thousands of lines a second: the console keeps a bounded tail', async (t) => {
  if (!haveChromium(t)) return;
  const { agent, serveApp } = await agentWithArchives(t);
  const source = await serveApp('flood', 'web: while true; do seq 1 500; sleep 0.1; done\n');
  const created = await api('POST', `${agent.url}/create-process`, {
    app: 'flood',
    node: 'web.0',
    process_type: 'web',
    source_url: source,
  });
  const browser = await launch(t);
  const { page, errors } = await openPage(browser, `${agent.url}/ui#flood.web.0`);
  await page.locator('#detail-slug:text("flood.web.0")').waitFor();
  await page.waitForFunction(() => /last 2000 kept/.test(document.getElementById('console-note')!.textContent ?? ''), undefined, {
    polling: 250,
  });
  const lines = await page.$eval('#console', (el) => (el.textContent ?? '').split('\n').length);
  t.equal(lines, 2000, 'exactly the last 2000 lines are kept');
  t.equal(await page.evaluate(() => document.getElementById('console')!.childNodes.length), 1, 'drawn as one text node');
  // The page still answers: switch tabs and back while the flood goes on.
  await page.click('#tab-events');
  await page.locator('#events').waitFor();
  await page.click('#tab-console');
  await page.locator('#console').waitFor();
  await api('POST', created.json.delete, {});
  await page.locator('.row[data-slug="flood.web.0"]').waitFor({ state: 'detached' });
  t.same(errors, [], 'no errors in the browser console');
});
