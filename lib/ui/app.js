// The dashboard: every process, grouped by app, with its state and resources; the state machine
// with live transitions; and per process its console (recent history, then live), its events
// as readable lines, its last exits when it keeps failing, its metrics, and the controls the
// agent offers. Everything is discovered from the agent's links (GET /, status documents);
// controls whose link is absent are not shown.

import { ApiError, followNdjson, request, toWs, withToken } from './api.js';
import { ConsoleView } from './console.js';
import { Diagram } from './diagram.js';
import { describeEvent, exitText, isFailure } from './events.js';
import { bytes, duration, NONE, percent, seconds, shownState, text, usageOf } from './format.js';
import { ProcessList } from './list.js';

const $ = (id) => document.getElementById(id);
const HISTORY = 12; // transitions kept per process for its timeline
const MAX_EVENTS = 200; // event log entries kept for the selected process
const MAX_EXITS = 5; // exits shown when a process keeps failing
const COLLAPSED_KEY = 'drover.collapsed';
const DIAGRAM_KEY = 'drover.diagram';
const GONE_AFTER_MS = 2500; // a deleted process stays visible this long

/** slug → { slug, state, since, pid, restarts, last_error, doc, history, goneAt, seenAt } */
const procs = new Map();
let links = null;
let diagram = null;
let selected = null;
let clockOffset = 0; // agent clock minus ours, from the inspect snapshot
let filterText = '';
let frame = 0;
let membershipChanged = true;
let sorted = [];
let eventsSource = null;
let eventsFor = null;
let consoleFor = null;
let events = [];
let eventsDirty = false;
let tab = 'console';
/** The selected process's exits (newest last), each with the last output line before it. */
let exits = [];
let lastOutput = null;
let metricsTimer = 0;
const collapsed = new Set(JSON.parse(localStorage.getItem(COLLAPSED_KEY) || '[]'));

const consoleView = new ConsoleView($('console'), $('console-note'));
const list = new ProcessList($('list'), $('list-spacer'), {
  columns: (p) => {
    const usage = usageOf(p.doc);
    return [text(p.pid), text(p.restarts), uptime(p), usage ? percent(usage.cpu) : NONE, usage ? bytes(usage.memory) : NONE];
  },
  onSelect: select,
  onToggle: (app) => {
    if (collapsed.has(app)) collapsed.delete(app);
    else collapsed.add(app);
    localStorage.setItem(COLLAPSED_KEY, JSON.stringify([...collapsed]));
    invalidate();
  },
});

function now() {
  return Date.now() + clockOffset;
}

function uptime(p) {
  return p.state === 'running' && p.since ? duration(now() - Date.parse(p.since)) : NONE;
}

function upsert(slug) {
  let p = procs.get(slug);
  if (!p) {
    p = {
      slug,
      state: 'pending',
      since: null,
      pid: null,
      restarts: 0,
      last_error: null,
      doc: null,
      history: [],
      goneAt: 0,
      seenAt: Date.now(),
    };
    procs.set(slug, p);
    membershipChanged = true;
  }
  return p;
}

/** A process's app: from its status document; until then, the slug up to its first dot. */
function appOf(p) {
  return p.doc?.app ?? p.slug.split('.')[0];
}

function nodeOf(p) {
  const app = appOf(p);
  return p.doc?.node ?? (p.slug.startsWith(`${app}.`) ? p.slug.slice(app.length + 1) : p.slug);
}

function remove(slug) {
  if (!procs.delete(slug)) return;
  membershipChanged = true;
  if (selected === slug) select(null);
}

// ---- data from the agent -------------------------------------------------------------

function applyDoc(doc) {
  const p = upsert(doc.slug);
  p.doc = doc;
  // Until the inspector reports on it, the status document is the best we know.
  if (!p.since) {
    p.state = doc.state;
    p.pid = doc.pid;
    p.restarts = doc.restarts;
    p.last_error = doc.errors?.at(-1) ?? null;
  }
  return p;
}

let listTimer = 0;
let listing = null;
let listAgain = false;
async function refreshList() {
  // One request at a time; a call during one asks for another afterwards (it may know of newer processes).
  if (listing) {
    listAgain = true;
    return listing;
  }
  const started = Date.now();
  listing = (async () => {
    try {
      const { processes } = await request('GET', links.list);
      const present = new Set();
      for (const doc of processes) {
        applyDoc(doc);
        present.add(doc.slug);
      }
      for (const p of procs.values()) if (!present.has(p.slug) && p.seenAt < started && !p.goneAt) remove(p.slug);
      invalidate();
    } catch (err) {
      if (!(err instanceof ApiError)) setLive('down');
    } finally {
      listing = null;
      if (listAgain) {
        listAgain = false;
        refreshListSoon();
      }
    }
  })();
  return listing;
}

/** Lists again soon (several unknown processes appearing at once make one request). */
function refreshListSoon() {
  clearTimeout(listTimer);
  listTimer = setTimeout(refreshList, 250);
}

async function pollList() {
  // Usage figures change all the time; the states come live from the inspector.
  if (document.visibilityState === 'visible') await Promise.all([refreshList(), refreshRuns()]);
  setTimeout(pollList, procs.size > 500 ? 10_000 : 5_000);
}

// ---- runs (POST /runs): listed apart from the long-running processes ------------------------

/** A run's actor: `run.` and its 128-bit id. */
const RUN_SLUG = /^run\.[0-9a-f]{32}$/;
let runsTimer = 0;

async function refreshRuns() {
  if (!links.runs) return;
  try {
    const { runs } = await request('GET', links.runs);
    const box = $('run-list');
    box.replaceChildren(
      ...runs.map((r) => {
        const row = document.createElement('div');
        row.className = 'row run';
        const cells = [
          r.name ?? r.id.slice(0, 12),
          r.state,
          r.stage ?? NONE,
          r.started_at ? new Date(r.started_at).toLocaleTimeString([], { hour12: false }) : NONE,
        ];
        for (const c of cells) {
          const span = document.createElement('span');
          span.textContent = c;
          row.append(span);
        }
        const a = document.createElement('a');
        a.href = r.links.events;
        a.textContent = 'events';
        a.target = '_blank';
        row.append(a);
        return row;
      }),
    );
    $('runs-empty').hidden = runs.length > 0;
  } catch {
    // the process list reports the agent being down
  }
}

function refreshRunsSoon() {
  clearTimeout(runsTimer);
  runsTimer = setTimeout(refreshRuns, 250);
}

function onTransition(r) {
  if (RUN_SLUG.test(r.slug)) return refreshRunsSoon();
  const known = procs.has(r.slug);
  const p = upsert(r.slug);
  // A new child (or none) is not ready until the agent says so (a `ready` record).
  if (p.doc && (r.to !== 'running' || r.from !== 'running')) Object.assign(p.doc, { ready: false, ready_at: null });
  p.state = r.to;
  p.since = r.since;
  p.pid = r.pid;
  p.restarts = r.restarts;
  p.last_error = r.last_error;
  if (r.from !== r.to) {
    p.history.push(r);
    if (p.history.length > HISTORY) p.history.shift();
    diagram?.animate(r.from, r.to, r.slug === selected);
    list.flash(r.slug);
  }
  if (r.to === 'deleted') p.goneAt = Date.now() + GONE_AFTER_MS;
  else if (!known || !p.doc) refreshListSoon();
  if (r.slug === selected && !eventsSource) eventsDirty = true;
  invalidate();
}

/** The child accepts connections on its $PORT: a fact about `running`, no transition. */
function onReady(r) {
  const p = procs.get(r.slug);
  if (!p?.doc) return;
  Object.assign(p.doc, { ready: true, ready_at: r.time, port: r.port });
  invalidate();
}

function onSnapshot(s) {
  clockOffset = Date.parse(s.time) - Date.now();
  const live = new Set();
  for (const v of s.processes) {
    if (RUN_SLUG.test(v.slug)) continue;
    const p = upsert(v.slug);
    Object.assign(p, { state: v.state, since: v.since, pid: v.pid, restarts: v.restarts, last_error: v.last_error });
    live.add(v.slug);
    if (!p.doc) refreshListSoon();
  }
  // Whatever is not in the snapshot was deleted while we were not listening.
  for (const slug of [...procs.keys()]) if (!live.has(slug)) remove(slug);
  invalidate();
}

function setLive(state) {
  const el = $('live');
  el.dataset.state = state;
  el.textContent = state === 'live' ? 'live' : state === 'down' ? 'reconnecting…' : 'connecting…';
}

let inspectDelay = 1000;
function connectInspect() {
  const ws = new WebSocket(withToken(toWs(links.inspect)));
  ws.onopen = () => {
    inspectDelay = 1000;
    setLive('live');
  };
  ws.onmessage = (e) => {
    const r = JSON.parse(e.data);
    if (r.type === 'snapshot') onSnapshot(r);
    else if (r.type === 'transition') onTransition(r);
    else if (r.type === 'ready') onReady(r);
  };
  ws.onclose = () => {
    setLive('down');
    setTimeout(connectInspect, inspectDelay);
    inspectDelay = Math.min(inspectDelay * 2, 10_000);
  };
}

// ---- rendering --------------------------------------------------------------------------

function invalidate() {
  if (!frame) frame = requestAnimationFrame(render);
}

function render() {
  frame = 0;
  const t = Date.now();
  for (const p of procs.values()) if (p.goneAt && p.goneAt < t) remove(p.slug);
  if (membershipChanged) {
    sorted = [...procs.values()].sort((a, b) => (a.slug < b.slug ? -1 : a.slug > b.slug ? 1 : 0));
    membershipChanged = false;
  }
  const f = filterText;
  const matching = f
    ? sorted.filter((p) => p.slug.toLowerCase().includes(f) || shownState(p).includes(f) || appOf(p).toLowerCase().includes(f))
    : sorted;
  list.setItems(grouped(matching), selected);
  const total = sorted.length;
  $('shown').textContent = f ? `${matching.length} of ${total}` : `${total} process${total === 1 ? '' : 'es'}`;
  $('empty').hidden = total > 0;

  const counts = new Map();
  const shown = new Map();
  for (const p of procs.values()) {
    counts.set(p.state, (counts.get(p.state) ?? 0) + 1);
    const s = shownState(p);
    shown.set(s, (shown.get(s) ?? 0) + 1);
  }
  renderCounts(shown);
  diagram?.update(counts, selected ? procs.get(selected)?.state : null);
  renderDetail();
  connectSelected();
  if (eventsDirty && tab === 'events') renderEvents();
}

/** Processes by app (apps in name order), each app led by its row: how many, in which states. */
function grouped(items) {
  const apps = new Map();
  for (const p of items) {
    const app = appOf(p);
    if (!apps.has(app)) apps.set(app, []);
    apps.get(app).push(p);
  }
  const out = [];
  for (const app of [...apps.keys()].sort()) {
    const members = apps.get(app).sort((a, b) => (nodeOf(a) < nodeOf(b) ? -1 : nodeOf(a) > nodeOf(b) ? 1 : 0));
    const byState = new Map();
    for (const p of members) byState.set(shownState(p), (byState.get(shownState(p)) ?? 0) + 1);
    out.push({ group: app, total: members.length, counts: [...byState], collapsed: collapsed.has(app) });
    if (!collapsed.has(app)) for (const p of members) out.push(Object.assign(p, { node: nodeOf(p), shownState: shownState(p) }));
  }
  return out;
}

function renderCounts(counts) {
  const parts = [...counts].filter(([, n]) => n > 0).map(([s, n]) => `<span data-state="${s}">${n} ${s}</span>`);
  const html = parts.join('');
  if ($('counts').innerHTML !== html) $('counts').innerHTML = html;
}

function field(label, value, wide = false) {
  const div = document.createElement('div');
  if (wide) div.className = 'wide';
  const dt = document.createElement('dt');
  dt.textContent = label;
  const dd = document.createElement('dd');
  dd.textContent = value;
  div.append(dt, dd);
  return div;
}

function renderDetail() {
  const p = selected ? procs.get(selected) : null;
  $('selected').hidden = !p;
  $('no-selection').hidden = Boolean(p);
  if (!p) return;
  const doc = p.doc ?? {};
  $('detail-slug').textContent = p.slug;
  const state = $('detail-state');
  const shown = shownState(p);
  if (state.textContent !== shown) state.textContent = shown;
  state.dataset.state = shown;
  // Ready: the child accepts connections on $PORT (web processes), a fact about `running`.
  const ready = $('detail-ready');
  const checks = doc.readiness === 'port' && p.state === 'running';
  ready.hidden = !checks;
  if (checks) {
    ready.textContent = doc.ready ? 'ready' : 'not ready yet';
    ready.dataset.ready = String(Boolean(doc.ready));
    ready.title = doc.ready
      ? `accepts connections on port ${doc.port} since ${new Date(doc.ready_at).toLocaleTimeString([], { hour12: false })}`
      : `waiting for port ${doc.port}`;
  }
  const usage = usageOf(doc);
  const fields = [
    field('pid', text(p.pid)),
    field('port', text(doc.port)),
    field('restarts', text(p.restarts)),
    field('uptime', uptime(p)),
    field('CPU', usage ? percent(usage.cpu) : NONE),
    field('memory', usage ? bytes(usage.memory) : NONE),
    field('type', text(doc.process_type)),
    field('created', doc.created_at ? new Date(doc.created_at).toLocaleString() : NONE),
  ];
  if (doc.release) fields.push(field('release', releaseText(doc), true));
  if (doc.command) fields.push(field('command', `${doc.command}${doc.command_from ? ` (from ${doc.command_from})` : ''}`, true));
  // When the process keeps failing, its last error heads the box of its last exits instead.
  if (!failing(p)) fields.push(field('last error', text(p.last_error), true));
  if (doc.env_names?.length) fields.push(field('env', doc.env_names.join(', '), true));
  const dl = $('detail-fields');
  const html = fields.map((f) => f.outerHTML).join('');
  if (dl.dataset.html !== html) {
    dl.replaceChildren(...fields);
    dl.dataset.html = html;
  }
  renderCrash(p);
  const timeline = p.history.map((r) => `<li title="${escapeHtml(`${r.time} · ${r.event}`)}">${escapeHtml(r.to)}</li>`).join('');
  if ($('timeline').innerHTML !== timeline) $('timeline').innerHTML = timeline;

  const gone = p.state === 'deleted';
  showButton('btn-restart', doc.restart && !gone);
  showButton('btn-stop', doc.stop && !gone && p.state !== 'exited');
  showButton('btn-start', doc.start && !gone && p.state === 'exited');
  showButton('signal-box', doc.signal && !gone && p.state === 'running');
  showButton('btn-delete', doc.delete && !gone);
  $('tab-metrics').hidden = !doc.metrics;
}

/** "3f2a9c1b7d10 from https://example.com/app.tgz": the short content hash and the source. */
function releaseText(doc) {
  const r = doc.release;
  return `${r.id ?? 'not downloaded yet'}${r.source ? ` from ${r.source}` : ''}`;
}

/**
 * When the process keeps failing (its last exits failures, or its last error newer than its
 * last good start): its last error and its last exits, each with the output line before it.
 */
function failing(p) {
  const failures = exits.filter((e) => e.failure).length;
  return failures > 0 && exits.at(-1).failure && (p.state !== 'running' || p.restarts > 0 || failures > 1);
}

function renderCrash(p) {
  const box = $('crash');
  const recent = exits.slice(-MAX_EXITS);
  box.hidden = !failing(p);
  if (box.hidden) return;
  const loop = exits.filter((e) => e.failure).length >= 2 && p.restarts >= 2;
  $('crash-title').textContent = loop ? `Crash loop: ${p.restarts} restarts` : 'Last exit failed';
  $('crash-error').textContent = p.last_error ? `last error: ${p.last_error}` : '';
  const items = recent
    .map((e) => {
      const line = e.output ? `<span class="out">${escapeHtml(e.output)}</span>` : '';
      return `<li class="${e.failure ? 'fail' : ''}" title="${escapeHtml(e.output ?? '')}"><time>${escapeHtml(e.when)}</time>${escapeHtml(e.text)}${line}</li>`;
    })
    .join('');
  if ($('crash-exits').innerHTML !== items) $('crash-exits').innerHTML = items;
}

function showButton(id, visible) {
  $(id).hidden = !visible;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// ---- selection, console and events -----------------------------------------------------

function select(slug) {
  if (slug === selected) return;
  selected = slug;
  history.replaceState(null, '', slug ? `#${encodeURIComponent(slug)}` : location.pathname);
  $('action-error').hidden = true;
  $('action-note').hidden = true;
  resetDelete();
  consoleView.close();
  consoleFor = null;
  $('console').replaceChildren();
  $('console-note').textContent = '';
  eventsSource?.abort();
  eventsSource = null;
  eventsFor = null;
  events = [];
  exits = [];
  lastOutput = null;
  renderEvents();
  if (tab === 'metrics') refreshMetrics();
  invalidate();
}

/** Opens the selected process's console and event stream once its status document (links) is known. */
function connectSelected() {
  const p = selected ? procs.get(selected) : null;
  if (!p?.doc || p.state === 'deleted') return;
  if (consoleFor !== p.slug && p.doc.attach) {
    consoleFor = p.slug;
    consoleView.open(withToken(p.doc.attach), p.slug);
  }
  if (eventsFor !== p.slug) {
    eventsFor = p.slug;
    openEvents(p);
  }
}

/** Takes in one entry of the selected process's event log. */
function onEvent(ev) {
  // A new process of that slug begins its history: what came before belongs to an earlier one.
  if (ev.type === 'state' && ev.from === null && ev.why === 'created') {
    events = [];
    exits = [];
    lastOutput = null;
  }
  // Output lines are what the console shows; the last one before an exit goes with the exit.
  if (typeof ev.text === 'string' && ev.stream) {
    if (ev.stream !== 'build' && (ev.stream === 'stderr' || lastOutput?.stream !== 'stderr'))
      lastOutput = { stream: ev.stream, text: ev.text };
    return;
  }
  // (Not reset at child_started: with the spawn helper a child's first lines may come before it.)
  if (ev.type === 'child_exited') {
    exits.push({
      when: ev.time ? new Date(ev.time).toLocaleTimeString([], { hour12: false }) : '',
      text: exitText(ev),
      failure: isFailure(ev),
      output: lastOutput?.text ?? null,
    });
    lastOutput = null;
    if (exits.length > MAX_EXITS * 4) exits.splice(0, exits.length - MAX_EXITS * 4);
  }
  // An exit that was asked for (stop, restart, replace, delete) is no failure.
  if (ev.type === 'state' && ev.from === 'running' && /requested|replaced/.test(ev.why ?? '') && exits.length) exits.at(-1).failure = false;
  // Download progress: one line that counts up, not one per chunk.
  if (ev.type === 'download' && events.at(-1)?.type === 'download') events.pop();
  events.push(ev);
  if (events.length > MAX_EVENTS) events.shift();
}

function openEvents(p) {
  if (p.doc.events) {
    // The event log (when the agent keeps one): NDJSON over fetch, so the token goes in a header.
    const controller = new AbortController();
    eventsSource = controller;
    followNdjson(
      p.doc.events,
      (ev) => {
        if (eventsSource !== controller) return;
        onEvent(ev);
        eventsDirty = true;
        invalidate();
      },
      controller.signal,
    ).catch(() => {}); // aborted on deselect, or the process went away
  }
  renderEvents();
}

/** One event as a list item: its time, its kind and what happened, exits and restarts marked. */
function eventItem(ev) {
  const { kind, detail, mark } = describeEvent(ev);
  const li = document.createElement('li');
  if (mark) li.className = `ev-${mark}`;
  li.dataset.type = ev.type ?? '';
  const time = document.createElement('time');
  time.textContent = ev.time ? new Date(ev.time).toLocaleTimeString([], { hour12: false }) : '';
  if (ev.time) time.dateTime = ev.time;
  const k = document.createElement('span');
  k.className = 'kind';
  k.textContent = kind;
  const d = document.createElement('span');
  d.className = 'detail';
  d.textContent = detail;
  li.append(time, k, d);
  return li;
}

function renderEvents() {
  eventsDirty = false;
  const list = $('events');
  const p = selected ? procs.get(selected) : null;
  const items = eventsSource
    ? events.map(eventItem)
    : (p?.history ?? []).map((r) => eventItem({ time: r.time, type: 'state', from: r.from, to: r.to, why: r.event }));
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  list.replaceChildren(...items);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// ---- metrics ---------------------------------------------------------------------------

async function refreshMetrics() {
  clearTimeout(metricsTimer);
  const p = selected ? procs.get(selected) : null;
  const box = $('metrics');
  if (tab !== 'metrics' || !p?.doc?.metrics) return;
  try {
    renderMetrics(await request('GET', p.doc.metrics));
  } catch (err) {
    box.textContent = `metrics unavailable: ${err.message}`;
  }
  if (tab === 'metrics') metricsTimer = setTimeout(refreshMetrics, 2000);
}

function renderMetrics(m) {
  const cpu = (u) => (u && (u.utime !== null || u.stime !== null) ? `${seconds((u.utime ?? 0) + (u.stime ?? 0))} CPU` : NONE);
  const rss = (u) => (u?.maxrss !== null && u?.maxrss !== undefined ? bytes(u.maxrss) : NONE);
  const stage = (name, s) =>
    `<tr><th>${name}</th><td>${s.runs}</td><td>${cpu(s.total)}</td><td>${cpu(s.last)}</td><td>${rss(s.last)}</td></tr>`;
  const now = m.current
    ? `${percent(m.current.cpu_percent)} CPU · ${bytes(m.current.rss)} · ${m.current.processes} process${m.current.processes === 1 ? '' : 'es'}`
    : NONE;
  const samples = m.samples ?? [];
  $('metrics').innerHTML = `
    <table class="stages">
      <thead><tr><th></th><th>runs</th><th>total</th><th>last</th><th>last peak memory</th></tr></thead>
      <tbody>${stage('build', m.build)}${stage('run', m.run)}</tbody>
    </table>
    <p><b>now</b> ${escapeHtml(now)}</p>
    ${samples.length > 1 ? spark(samples, 'cpu_percent', 'CPU %', percent) + spark(samples, 'rss', 'memory', bytes) : ''}`;
}

/** A small line chart of one figure over the recent samples. */
function spark(samples, key, label, fmt) {
  const values = samples.map((s) => s[key]);
  const max = Math.max(...values, key === 'cpu_percent' ? 1 : 1024);
  const w = 300;
  const h = 40;
  const pts = values.map((v, i) => `${((i / (values.length - 1)) * w).toFixed(1)},${(h - (v / max) * (h - 2) - 1).toFixed(1)}`).join(' ');
  return `<figure class="spark"><figcaption>${label}: ${escapeHtml(fmt(values.at(-1)))} (peak ${escapeHtml(fmt(Math.max(...values)))})</figcaption>
    <svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none"><polyline points="${pts}" /></svg></figure>`;
}

function showTab(name) {
  tab = name;
  for (const t of ['console', 'events', 'metrics']) {
    $(`tab-${t}`).setAttribute('aria-selected', String(name === t));
    $(t).hidden = name !== t;
  }
  $('console-note').hidden = name !== 'console';
  if (name === 'events') renderEvents();
  if (name === 'metrics') refreshMetrics();
}

// ---- actions ---------------------------------------------------------------------------

async function act(button, url, body = {}) {
  const error = $('action-error');
  error.hidden = true;
  $('action-note').hidden = true;
  button.disabled = true;
  try {
    const doc = await request('POST', url, body);
    if (doc?.slug) applyDoc(doc);
    return true;
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
    return false;
  } finally {
    button.disabled = false;
    invalidate();
  }
}

let deleteArmed = 0;
function resetDelete() {
  clearTimeout(deleteArmed);
  deleteArmed = 0;
  $('btn-delete').textContent = 'Delete';
}

$('btn-delete').addEventListener('click', (e) => {
  const p = procs.get(selected);
  if (!p?.doc?.delete) return;
  // Two clicks: a process is not deleted by one stray click.
  if (!deleteArmed) {
    e.currentTarget.textContent = 'Confirm delete';
    deleteArmed = setTimeout(resetDelete, 4000);
    return;
  }
  resetDelete();
  e.currentTarget.textContent = 'Deleting…';
  act(e.currentTarget, p.doc.delete);
});
$('btn-signal').addEventListener('click', async (e) => {
  const url = procs.get(selected)?.doc?.signal;
  if (!url) return;
  const signal = $('signal-name').value;
  if (await act(e.currentTarget, url, { signal })) {
    $('action-note').textContent = `sent ${signal} to ${selected}'s process group`;
    $('action-note').hidden = false;
  }
});
for (const name of ['restart', 'stop', 'start']) {
  $(`btn-${name}`).addEventListener('click', (e) => {
    const url = procs.get(selected)?.doc?.[name];
    if (url) act(e.currentTarget, url);
  });
}

// ---- create ----------------------------------------------------------------------------

function parseEnv(textValue) {
  const env = {};
  textValue.split('\n').forEach((line, i) => {
    const s = line.trim();
    if (!s || s.startsWith('#')) return;
    const eq = s.indexOf('=');
    if (eq <= 0) throw new ApiError(400, { errors: [{ status: 400, field: 'env', detail: `env line ${i + 1}: expected NAME=value` }] });
    env[s.slice(0, eq).trim()] = s.slice(eq + 1);
  });
  return env;
}

function showCreateErrors(errors) {
  const form = $('create-form');
  for (const input of form.querySelectorAll('input, textarea')) input.removeAttribute('aria-invalid');
  const ul = $('create-errors');
  ul.replaceChildren(...errors.map((e) => Object.assign(document.createElement('li'), { textContent: e.detail })));
  for (const e of errors) if (e.field) form.elements[e.field]?.setAttribute('aria-invalid', 'true');
}

$('new-process').addEventListener('click', () => {
  showCreateErrors([]);
  $('create-dialog').showModal();
  $('create-form').elements.app.focus();
});
$('create-cancel').addEventListener('click', () => $('create-dialog').close());
$('create-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  const submit = $('create-submit');
  submit.disabled = true;
  try {
    const v = (name) => form.elements[name].value.trim();
    const doc = await request('POST', links.create, {
      app: v('app'),
      node: v('node'),
      process_type: v('process_type'),
      source_url: v('source_url'),
      env: parseEnv(form.elements.env.value),
    });
    applyDoc(doc);
    $('create-dialog').close();
    form.reset();
    select(doc.slug);
    list.scrollTo(doc.slug);
  } catch (err) {
    showCreateErrors(err instanceof ApiError && err.errors.length ? err.errors : [{ detail: err.message }]);
  } finally {
    submit.disabled = false;
    invalidate();
  }
});

// ---- start -----------------------------------------------------------------------------

$('filter').addEventListener('input', (e) => {
  filterText = e.target.value.trim().toLowerCase();
  invalidate();
});

function filterByState(state) {
  const input = $('filter');
  input.value = input.value === state ? '' : state;
  filterText = input.value;
  invalidate();
}
$('tab-console').addEventListener('click', () => showTab('console'));
$('tab-events').addEventListener('click', () => showTab('events'));
$('tab-metrics').addEventListener('click', () => showTab('metrics'));

function showDiagram(visible) {
  $('diagram').dataset.collapsed = String(!visible);
  $('diagram-toggle').textContent = visible ? 'hide' : 'show';
  $('diagram-toggle').setAttribute('aria-expanded', String(visible));
  localStorage.setItem(DIAGRAM_KEY, visible ? 'shown' : 'hidden');
}
$('diagram-toggle').addEventListener('click', () => showDiagram($('diagram').dataset.collapsed === 'true'));
showDiagram(localStorage.getItem(DIAGRAM_KEY) !== 'hidden');
setInterval(invalidate, 1000); // uptimes tick

async function boot() {
  links = await request('GET', new URL('/', location.href).toString());
  $('agent').textContent = new URL(links.list).host;
  $('new-process').disabled = !links.create;
  if (links.machine) diagram = new Diagram($('diagram'), await request('GET', links.machine), filterByState);
  else $('diagram-panel').hidden = true;
  $('runs').hidden = !links.runs;
  await Promise.all([refreshList(), refreshRuns()]);
  if (links.inspect) connectInspect();
  setTimeout(pollList, 5000);
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted && procs.has(wanted)) select(wanted);
  invalidate();
}

boot().catch((err) => {
  setLive('down');
  $('no-selection').textContent = `Cannot reach the agent: ${err.message}`;
});
