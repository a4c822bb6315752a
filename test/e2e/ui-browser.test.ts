import t from 'tap';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { agentWithArchives, api } from '../helpers/agent.js';
import { haveChromium, launch, openPage } from '../helpers/browser.js';
import { waitFor } from '../helpers/wait.js';
import { liveGroupMembers } from '../../lib/os/proc.js';

// A real browser next to an agent and its children: give a slow, shared machine room.
t.setTimeout(300_000);

const texts = (page: Page, selector: string) => page.$$eval(selector, (els) => els.map((e) => e.textContent ?? ''));

/** Waits until the detail panel shows `value` for field `label`. */
function fieldValue(page: Page, label: string) {
  return page.$$eval(
    '#detail-fields div',
    (divs, l) => divs.find((d) => d.querySelector('dt')?.textContent === l)?.querySelector('dd')?.textContent ?? null,
    label,
  );
}

t.test('from the page: create a process, watch it reach running, read its console, restart, stop, start and delete it', async (t) => {
  if (!haveChromium(t)) return;
  const { agent, serveApp } = await agentWithArchives(t);
  const source = await serveApp(
    'printer',
    'web: echo "hello $GREETING"; i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.05; done\n',
  );
  const browser = await launch(t);
  const { page, errors } = await openPage(browser, `${agent.url}/ui`);
  await page.locator('#live[data-state="live"]').waitFor();
  t.equal(await page.textContent('#shown'), '0 processes');
  t.equal(await page.locator('#diagram g.node').count(), 7, 'the machine is drawn, one box per state');

  // A bad request shows the agent's error next to the field it names.
  await page.click('#new-process');
  await page.fill('input[name=app]', 'demo');
  await page.fill('input[name=node]', 'web.0');
  await page.fill('input[name=process_type]', 'web');
  await page.fill('input[name=source_url]', 'not a url');
  await page.click('#create-submit');
  await page.locator('#create-errors li').waitFor();
  t.match(await page.textContent('#create-errors'), /source_url: is not a valid absolute URL/);
  t.equal(await page.getAttribute('input[name=source_url]', 'aria-invalid'), 'true');
  // The browser logs every 4xx response; this one was asked for.
  t.match(errors.splice(0), [/status of 400/], 'the only console error so far is that 400');

  await page.fill('input[name=source_url]', source);
  await page.fill('textarea[name=env]', 'GREETING=from the page\n');
  await page.click('#create-submit');
  await page.locator('#create-dialog').waitFor({ state: 'hidden' });
  const row = page.locator('.row[data-slug="demo.web.0"]');
  await row.waitFor();
  t.equal(await page.textContent('#detail-slug'), 'demo.web.0', 'the new process is selected');

  // Every state it passes through, as the inspector reported them.
  await page.waitForFunction(() =>
    [...document.querySelectorAll('#timeline li')]
      .map((li) => li.textContent)
      .join(' ')
      .startsWith('pending downloading building running'),
  );
  t.same((await texts(page, '#timeline li')).slice(0, 4), ['pending', 'downloading', 'building', 'running']);
  await page.locator('#diagram g.node.current[data-state="running"]').waitFor();
  await waitFor(async () => (await row.locator('.state').textContent()) === 'running', 'the row to show running');
  t.equal(await row.locator('.state').textContent(), 'running');
  const status = await api('GET', `${agent.url}/process-status/demo.web.0`);
  await waitFor(async () => (await fieldValue(page, 'pid')) === String(status.json.pid), 'the pid shown');
  t.same(status.json.env_names, ['GREETING'], 'env from the form reached the agent');

  // The console streams the output.
  await page.waitForFunction(() => /line 3\b/.test(document.getElementById('console')!.innerText));
  t.match(await page.innerText('#console'), /^hello from the page\nline 1\nline 2\n/, 'from its first line, in order');
  await waitFor(async () => /demo\.web\.0: \d+ lines?/.test((await page.textContent('#console-note')) ?? ''), 'the console note');
  t.match(await page.textContent('#console-note'), /demo\.web\.0: \d+ lines?/);

  const doc = status.json;
  t.ok(doc.restart && doc.stop && doc.start, 'the agent offers restart, stop and start');
  const timeline = async () => (await texts(page, '#timeline li')).join(' ');

  await page.click('#btn-restart');
  await waitFor(async () => (await fieldValue(page, 'restarts')) === '1', 'restarts to count the restart');
  await waitFor(async () => (await timeline()).endsWith('running exited restarting running'), 'the restart in the timeline');
  await waitFor(
    async () => /^\d+$/.test((await fieldValue(page, 'pid')) ?? '') && (await fieldValue(page, 'pid')) !== String(doc.pid),
    'a new pid',
  );
  const restartedPid = Number(await fieldValue(page, 'pid'));
  t.same(liveGroupMembers(doc.pid), [], 'the old process group is gone');

  await page.click('#btn-stop');
  await page.locator('#btn-start').waitFor();
  // The start button, the state line and the diagram are updated by different messages: wait for each.
  await waitFor(async () => (await page.textContent('#detail-state')) === 'stopped', 'the detail state to say stopped');
  t.equal(await page.textContent('#detail-state'), 'stopped');
  t.equal(await row.locator('.state').textContent(), 'stopped', 'the same word in the list');
  await page.locator('#diagram g.node.current[data-state="exited"]').waitFor();
  await page.locator('#btn-stop').waitFor({ state: 'hidden' });
  t.ok(await page.locator('#btn-stop').isHidden(), 'stop gives way to start');
  t.same(liveGroupMembers(restartedPid), [], 'stopped: no process left');
  t.equal((await api('GET', doc.status)).json.stopped, true);

  await page.click('#btn-start');
  await page.locator('#btn-stop').waitFor();
  await page.locator('#diagram g.node.current[data-state="running"]').waitFor();
  await waitFor(async () => /^\d+$/.test((await fieldValue(page, 'pid')) ?? ''), 'running again with a pid');
  const finalPid = Number(await fieldValue(page, 'pid'));
  t.not(finalPid, restartedPid);

  // Delete takes two clicks.
  await page.click('#btn-delete');
  await waitFor(async () => (await page.textContent('#btn-delete')) === 'Confirm delete', 'the delete button to ask for confirmation');
  t.equal(await page.textContent('#btn-delete'), 'Confirm delete');
  t.equal((await api('GET', `${agent.url}/list-processes`)).json.processes.length, 1, 'one click deletes nothing');
  await page.click('#btn-delete');
  await page.waitForFunction(() => [...document.querySelectorAll('#timeline li')].some((li) => li.textContent === 'deleted'));
  await row.waitFor({ state: 'detached' });
  t.same((await api('GET', `${agent.url}/list-processes`)).json.processes, []);
  t.same(liveGroupMembers(finalPid), [], 'the process group is gone');
  await waitFor(async () => (await page.textContent('#shown')) === '0 processes', 'the count to drop to 0');
  t.equal(await page.textContent('#shown'), '0 processes');
  t.same(errors, [], 'no errors in the browser console');
});

t.test('with a token: asked once (again when rejected), sent on every request and WebSocket, kept for the tab', async (t) => {
  if (!haveChromium(t)) return;
  const TOKEN = 'tab-s3cret';
  const { agent, serveApp } = await agentWithArchives(t, { token: TOKEN });
  const browser = await launch(t);
  const { page, errors, context } = await openPage(browser, 'about:blank');
  const unauthorized: string[] = [];
  context.on('response', (r) => {
    if (r.status() === 401) unauthorized.push(new URL(r.url()).pathname);
  });
  // The page itself loads without the token (it has to ask for it)...
  await page.goto(`${agent.url}/ui`);
  await page.locator('#token-dialog[open]').waitFor();
  t.same(unauthorized, ['/'], '...and its first API request is refused');
  await page.fill('#token-input', 'wrong');
  await page.click('#token-submit');
  await page.waitForFunction(
    () => /rejected/.test(document.getElementById('token-why')!.textContent ?? '') && document.querySelector('#token-dialog[open]'),
  );
  await page.fill('#token-input', TOKEN);
  await page.click('#token-submit');
  await page.locator('#live[data-state="live"]').waitFor(); // the inspect WebSocket got through the gate

  const source = await serveApp('w', 'web: while true; do echo started; sleep 0.2; done\n');
  const created = await api(
    'POST',
    `${agent.url}/create-process`,
    { app: 'tok', node: 'web.0', process_type: 'web', source_url: source },
    { authorization: `Bearer ${TOKEN}` },
  );
  t.equal(created.status, 201);
  await page.locator('.row[data-slug="tok.web.0"] .state:text("running")').waitFor();
  await page.click('.row[data-slug="tok.web.0"]');
  await page.waitForFunction(() => /started/.test(document.getElementById('console')!.innerText)); // so did attach

  t.equal(unauthorized.length, 2, 'refused only before the right token was given');
  await page.reload();
  await page.locator('#live[data-state="live"]').waitFor();
  await page.locator('.row[data-slug="tok.web.0"]').waitFor();
  t.equal(await page.locator('#token-dialog[open]').count(), 0, 'not asked again after a reload');
  t.equal(unauthorized.length, 2, 'every request after the prompt carried the token');
  t.equal(await page.evaluate(() => sessionStorage.getItem('drover.token')), TOKEN);
  t.equal(errors.filter((e) => /status of 401/.test(e)).length, 2);
  t.same(
    errors.filter((e) => !/status of 401/.test(e)),
    [],
    'no other errors',
  );
  await api('POST', created.json.delete, {}, { authorization: `Bearer ${TOKEN}` });
});
