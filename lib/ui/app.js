// The dashboard: every process with its state and resources, the state machine with live
// transitions, and per process a console, recent events and the controls the agent offers.
// Everything is discovered from the agent's links (GET /, status documents); controls whose
// link is absent are not shown.

import { ApiError, followNdjson, request, toWs, withToken } from './api.js';
import { ConsoleView } from './console.js';
import { Diagram } from './diagram.js';
import { bytes, duration, NONE, percent, text, usageOf } from './format.js';
import { ProcessList } from './list.js';

const $ = (id) => document.getElementById(id);
const HISTORY = 12; // transitions kept per process for its timeline
const MAX_EVENTS = 200; // event log entries kept for the selected process
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

const consoleView = new ConsoleView($('console'), $('console-note'));
const list = new ProcessList($('list'), $('list-spacer'), {
  columns: (p) => {
    const usage = usageOf(p.doc);
    return [text(p.pid), text(p.restarts), uptime(p), usage ? percent(usage.cpu) : NONE, usage ? bytes(usage.memory) : NONE];
  },
  onSelect: select,
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
          r.started_at ? new Date(r.started_at).toLocaleTimeString() : NONE,
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
  const items = f ? sorted.filter((p) => p.slug.toLowerCase().includes(f) || p.state.includes(f)) : sorted;
  list.setItems(items, selected);
  $('shown').textContent = f ? `${items.length} of ${sorted.length}` : `${sorted.length} process${sorted.length === 1 ? '' : 'es'}`;
  $('empty').hidden = sorted.length > 0;

  const counts = new Map();
  for (const p of procs.values()) counts.set(p.state, (counts.get(p.state) ?? 0) + 1);
  renderCounts(counts);
  diagram?.update(counts, selected ? procs.get(selected)?.state : null);
  renderDetail();
  connectSelected();
  if (eventsDirty && tab === 'events') renderEvents();
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
  state.textContent = p.state === 'exited' && doc.stopped ? 'exited (stopped)' : p.state;
  state.dataset.state = p.state;
  const usage = usageOf(doc);
  const errors = doc.errors ?? [];
  const fields = [
    field('pid', text(p.pid)),
    field('port', text(doc.port)),
    field('restarts', text(p.restarts)),
    field('uptime', uptime(p)),
    field('CPU', usage ? percent(usage.cpu) : NONE),
    field('memory', usage ? bytes(usage.memory) : NONE),
    field('type', text(doc.process_type)),
    field('created', doc.created_at ? new Date(doc.created_at).toLocaleString() : NONE),
    field('last error', text(p.last_error), true),
  ];
  if (errors.length > 1) fields.push(field(`errors (${errors.length})`, errors.slice(-5).join(' · '), true));
  if (doc.env_names?.length) fields.push(field('env', doc.env_names.join(', '), true));
  const dl = $('detail-fields');
  const html = fields.map((f) => f.outerHTML).join('');
  if (dl.dataset.html !== html) {
    dl.replaceChildren(...fields);
    dl.dataset.html = html;
  }
  const timeline = p.history.map((r) => `<li title="${escapeHtml(`${r.time} · ${r.event}`)}">${escapeHtml(r.to)}</li>`).join('');
  if ($('timeline').innerHTML !== timeline) $('timeline').innerHTML = timeline;

  const gone = p.state === 'deleted';
  showButton('btn-restart', doc.restart && !gone);
  showButton('btn-stop', doc.stop && !gone && p.state !== 'exited');
  showButton('btn-start', doc.start && !gone && p.state === 'exited');
  showButton('btn-delete', doc.delete && !gone);
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
  resetDelete();
  consoleView.close();
  consoleFor = null;
  $('console').replaceChildren();
  $('console-note').textContent = '';
  eventsSource?.abort();
  eventsSource = null;
  eventsFor = null;
  events = [];
  renderEvents();
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

function openEvents(p) {
  if (p.doc.events) {
    // The event log (when the agent keeps one): NDJSON over fetch, so the token goes in a header.
    const controller = new AbortController();
    eventsSource = controller;
    followNdjson(
      p.doc.events,
      (ev) => {
        // Output lines are what the console shows; the events tab is for everything else.
        if (typeof ev.text === 'string' && ev.stream) return;
        events.push(ev);
        if (events.length > MAX_EVENTS) events.shift();
        if (eventsSource === controller) {
          eventsDirty = true;
          invalidate();
        }
      },
      controller.signal,
    ).catch(() => {}); // aborted on deselect, or the process went away
  }
  renderEvents();
}

function describeEvent(ev) {
  const { id, time, type, ...rest } = ev;
  const when = time ? new Date(time).toLocaleTimeString() : '';
  return `${id !== undefined ? `#${id} ` : ''}${when} ${type ?? ''} ${JSON.stringify(rest)}`;
}

function renderEvents() {
  eventsDirty = false;
  const ol = $('events');
  const p = selected ? procs.get(selected) : null;
  const items = eventsSource
    ? events.map(describeEvent)
    : (p?.history ?? []).map((r) => `${new Date(r.time).toLocaleTimeString()} ${r.from ?? '∅'} → ${r.to} (${r.event})`);
  ol.replaceChildren(...items.map((s) => Object.assign(document.createElement('li'), { textContent: s })));
  ol.scrollTop = ol.scrollHeight;
}

function showTab(name) {
  tab = name;
  $('tab-console').setAttribute('aria-selected', String(name === 'console'));
  $('tab-events').setAttribute('aria-selected', String(name === 'events'));
  $('console').hidden = name !== 'console';
  $('events').hidden = name !== 'events';
  if (name === 'events') renderEvents();
}

// ---- actions ---------------------------------------------------------------------------

async function act(button, url) {
  const error = $('action-error');
  error.hidden = true;
  button.disabled = true;
  try {
    const doc = await request('POST', url, {});
    if (doc?.slug) applyDoc(doc);
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
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
setInterval(invalidate, 1000); // uptimes tick

async function boot() {
  links = await request('GET', new URL('/', location.href).toString());
  $('agent').textContent = new URL(links.list).host;
  $('new-process').disabled = !links.create;
  if (links.machine) diagram = new Diagram($('diagram'), await request('GET', links.machine), filterByState);
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
