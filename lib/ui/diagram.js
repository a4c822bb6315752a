// The process state machine drawn as SVG from GET /machine: how many processes are in each
// state, the selected process's state highlighted, and a token travelling along the arrow of
// every transition as it happens. Compact on purpose (about 200 px tall): states on two rows,
// events that reach one state from many others drawn once as a short stub, and every label
// placed where it covers no state, no other label and as little of the arrows as possible.

const SVG = 'http://www.w3.org/2000/svg';
const W = 92;
const H = 32;
const STEP_X = 136;
const STEP_Y = 96;
const MARGIN = 14;
const MAX_COLS = 4;
const MAX_TOKENS = 24;
const MANY = 3; // sources of one event into one state from which it is drawn as a stub
const LABEL_LINE = 12; // px per label line
const CHAR = 5.9; // px per character of a label (10.5 px font)
const STUB = 26; // length of a stub's arrow
const KNOWN = new Set(['pending', 'downloading', 'building', 'running', 'exited', 'restarting', 'deleted']);

/**
 * drover's own machine, placed by hand (column, row): the main flow on top, the two states a
 * child comes back through below it, `deleted` apart. Other machines get the generic grid.
 */
const PLACES = {
  pending: [0, 0],
  downloading: [1, 0],
  building: [2, 0],
  running: [3, 0],
  restarting: [1.3, 1],
  exited: [3, 1],
  deleted: [4.1, 1],
};
/** Where each stub (see groupTransitions) enters its state: from below, above or the right. */
const STUB_SIDES = { exited: 'below', deleted: 'below', running: 'right' };
/** Shorter words for some labels, to keep the picture small (the arrow's tooltip has the events). */
const SHORT = { 'after backoff': 'backoff', 'CHILD.EXITED': 'exit' };
/** In drover's machine, the two long arrows that cross bow apart, so their labels do too. */
const BENDS = { 'exited>downloading': 22, 'restarting>running': 22 };
/** In drover's machine, also drawn as stubs: failures of a run (which is not retried) end in `exited`. */
const STUBBED = new Set(['error>exited']);

function el(name, attrs = {}, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  parent?.appendChild(node);
  return node;
}

/**
 * Events that reach one state from many others (STOP from every busy state, DELETE from any
 * state) are drawn once, as a stub naming how many, instead of a fan of arrows across the
 * picture. Returns { notes: [{ key, target, label, sources }], drawn }.
 */
export function groupTransitions(doc, stubbed = new Set()) {
  const bySignature = new Map();
  for (const t of doc.transitions) {
    if (t.source === t.target) continue;
    const key = `${t.label}>${t.target}`;
    const g = bySignature.get(key) ?? { key, target: t.target, label: t.label, sources: [] };
    if (!g.sources.includes(t.source)) g.sources.push(t.source);
    bySignature.set(key, g);
  }
  const notes = [...bySignature.values()].filter((g) => g.sources.includes('*') || g.sources.length >= MANY || stubbed.has(g.key));
  const noted = new Set(notes.map((g) => g.key));
  const drawn = doc.transitions.filter((t) => t.source !== t.target && !noted.has(`${t.label}>${t.target}`));
  return { notes, drawn };
}

/** What a stub says about where its event comes from: "any state", "4 states". */
export function stubText(note, doc) {
  if (note.sources.includes('*')) return `${note.label} (any state)`;
  const others = doc.states.filter((s) => s.type !== 'final' && s.name !== note.target).length;
  return `${note.label} (${note.sources.length === others ? 'any other state' : `${note.sources.length} states`})`;
}

/**
 * Centres of the states: drover's machine by hand, any other in declaration order snaking over
 * rows of at most MAX_COLS, final states in a column on the right.
 */
export function layout(doc) {
  const names = doc.states.map((s) => s.name);
  const known = names.every((n) => PLACES[n]);
  const pos = new Map();
  if (known) for (const n of names) pos.set(n, { col: PLACES[n][0], row: PLACES[n][1] });
  else {
    const finals = doc.states.filter((s) => s.type === 'final').map((s) => s.name);
    const inner = names.filter((n) => !finals.includes(n));
    const cols = Math.max(1, Math.min(MAX_COLS, inner.length));
    inner.forEach((n, i) => {
      const row = Math.floor(i / cols);
      pos.set(n, { col: row % 2 === 0 ? i % cols : cols - 1 - (i % cols), row });
    });
    const lastRow = Math.max(0, Math.ceil(inner.length / cols) - 1);
    finals.forEach((n, i) => pos.set(n, { col: cols + 0.1, row: lastRow + i }));
  }
  const centers = new Map([...pos].map(([n, p]) => [n, { x: MARGIN + W / 2 + p.col * STEP_X, y: MARGIN + H / 2 + p.row * STEP_Y }]));
  return { centers, known };
}

/** Where the segment from the centre `c` towards `p` leaves a w×h box. */
function clip(c, p, w = W, h = H) {
  const dx = p.x - c.x;
  const dy = p.y - c.y;
  if (dx === 0 && dy === 0) return c;
  const t = Math.min(dx ? w / 2 / Math.abs(dx) : Infinity, dy ? h / 2 / Math.abs(dy) : Infinity);
  return { x: c.x + dx * t, y: c.y + dy * t };
}

/** A quadratic curve from box `a` to box `b`, bent sideways by `bend`; `at(t)` is its point at t. */
function curve(a, b, bend, boxA = [W, H], boxB = [W, H]) {
  const mx = (a.x + b.x) / 2;
  const my = (a.y + b.y) / 2;
  const len = Math.hypot(b.x - a.x, b.y - a.y) || 1;
  const ctrl = { x: mx - ((b.y - a.y) / len) * bend, y: my + ((b.x - a.x) / len) * bend };
  const p0 = clip(a, ctrl, ...boxA);
  const p2 = clip(b, ctrl, ...boxB);
  const at = (t) => ({
    x: (1 - t) ** 2 * p0.x + 2 * (1 - t) * t * ctrl.x + t ** 2 * p2.x,
    y: (1 - t) ** 2 * p0.y + 2 * (1 - t) * t * ctrl.y + t ** 2 * p2.y,
  });
  return {
    ctrl,
    at,
    d: `M${p0.x.toFixed(1)},${p0.y.toFixed(1)} Q${ctrl.x.toFixed(1)},${ctrl.y.toFixed(1)} ${p2.x.toFixed(1)},${p2.y.toFixed(1)}`,
  };
}

const area = (r, o) =>
  Math.max(0, Math.min(r.x + r.w, o.x + o.w) - Math.max(r.x, o.x)) * Math.max(0, Math.min(r.y + r.h, o.y + o.h) - Math.max(r.y, o.y));
const inside = (p, r) => p.x > r.x && p.x < r.x + r.w && p.y > r.y && p.y < r.y + r.h;

export class Diagram {
  /** onStateClick(name): a state box was clicked (the dashboard filters the list by it). */
  constructor(container, doc, onStateClick = () => {}) {
    this.doc = doc;
    this.nodes = new Map();
    this.edges = new Map();
    this.notes = [];
    this.tokens = 0;
    const { centers, known } = layout(doc);
    const { notes, drawn } = groupTransitions(doc, known ? STUBBED : new Set());
    this.centers = centers;
    const finalStates = new Set(doc.states.filter((s) => s.type === 'final').map((s) => s.name));

    // Everything placed so far (boxes, then labels), so that each new label avoids them; and
    // points along every arrow, so labels avoid sitting on arrows other than their own.
    const boxes = [...centers.values()].map((c) => ({ x: c.x - W / 2, y: c.y - H / 2, w: W, h: H }));
    const labels = [];
    const pathPoints = [];

    // The stubs first: their place is fixed (a side of their state); one per state, a line per event.
    const stubs = [];
    const byTarget = new Map();
    for (const note of notes) {
      if (!centers.get(note.target)) continue;
      if (!byTarget.has(note.target)) byTarget.set(note.target, []);
      byTarget.get(note.target).push(note);
    }
    for (const [target, group] of byTarget) {
      const c = centers.get(target);
      const lines = group.map((n) => stubText(n, doc));
      const width = Math.max(...lines.map((l) => l.length)) * CHAR + 6;
      const height = lines.length * LABEL_LINE + 2;
      const any = group.some((n) => n.sources.includes('*'));
      const side = STUB_SIDES[target] ?? (any ? 'above' : [...centers.values()].some((o) => o.y > c.y) ? 'right' : 'below');
      let from;
      let to;
      let rect;
      if (side === 'right') {
        to = { x: c.x + W / 2, y: c.y };
        from = { x: to.x + STUB, y: c.y };
        rect = { x: from.x + 2, y: c.y - height / 2, w: width, h: height };
      } else {
        const dir = side === 'above' ? -1 : 1;
        to = { x: c.x, y: c.y + (dir * H) / 2 };
        from = { x: c.x, y: to.y + dir * STUB };
        rect = { x: c.x - width / 2, y: dir > 0 ? from.y + 1 : from.y - height - 1, w: width, h: height };
      }
      labels.push(rect);
      stubs.push({ key: `stub:${target}`, target, group, lines, from, to, rect });
      for (let i = 0; i <= 4; i++)
        pathPoints.push({ x: from.x + ((to.x - from.x) * i) / 4, y: from.y + ((to.y - from.y) * i) / 4, owner: `stub:${target}` });
    }

    // One arrow per pair of states; labels of parallel transitions are merged.
    const pairs = new Map();
    for (const t of drawn) {
      const key = `${t.source}>${t.target}`;
      const pair = pairs.get(key) ?? { key, source: t.source, target: t.target, labels: [], details: [] };
      if (!pair.labels.includes(t.label)) pair.labels.push(t.label);
      pair.details.push(`${t.event}${t.guard ? ` [${t.guard}]` : ''}`);
      pairs.set(key, pair);
    }
    const arrows = [];
    for (const pair of pairs.values()) {
      const a = centers.get(pair.source);
      const b = centers.get(pair.target);
      if (!a || !b) continue;
      const bend = (known && BENDS[pair.key]) || (pairs.has(`${pair.target}>${pair.source}`) ? 20 : 0);
      const c = curve(a, b, bend);
      arrows.push({ pair, a, b, bend, c, length: Math.hypot(a.x - b.x, a.y - b.y) });
      for (let i = 1; i < 24; i++) pathPoints.push({ ...c.at(i / 24), owner: pair.key });
    }

    /** The best place for an arrow's label: no state, no label under it, few arrows. */
    const placeLabel = (arrow, lines) => {
      const width = Math.max(...lines.map((l) => l.length)) * CHAR + 6;
      const height = lines.length * LABEL_LINE + 2;
      const { a, b, c } = arrow;
      const len = arrow.length || 1;
      const normal = { x: -(b.y - a.y) / len, y: (b.x - a.x) / len };
      let best = null;
      for (const t of [0.5, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.2, 0.8]) {
        const p = c.at(t);
        // On the arrow (its background hides the arrow under it), or beside it on either side.
        for (const off of [0, 1, -1]) {
          const gap = off === 0 ? 0 : Math.abs(normal.x) * (width / 2 + 3) + Math.abs(normal.y) * (height / 2 + 3);
          const cx = p.x + off * normal.x * gap;
          const cy = p.y + off * normal.y * gap;
          const rect = { x: cx - width / 2, y: cy - height / 2, w: width, h: height };
          let cost = 0;
          for (const o of boxes) cost += area(rect, o) * 100;
          for (const o of labels) cost += area(rect, o) * 100;
          for (const q of pathPoints) if (q.owner !== arrow.pair.key && inside(q, rect)) cost += 12;
          // Never over its own arrowhead: the direction is what the arrow says.
          for (const end of [0.9, 0.95, 1]) if (inside(c.at(end), rect)) cost += 80;
          cost += Math.abs(t - 0.5) * 40 + (off === 0 ? 0 : 10);
          if (!best || cost < best.cost) best = { rect, cost };
        }
      }
      return best.rect;
    };

    const svg = el('svg', { role: 'img', 'aria-label': `State machine ${doc.id}` });
    this.svg = svg;
    const defs = el('defs', {}, svg);
    const marker = el(
      'marker',
      { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse' },
      defs,
    );
    el('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#9aa4b2' }, marker);
    const edgeLayer = el('g', { class: 'edges' }, svg);
    const labelLayer = el('g', { class: 'labels' }, svg);
    const nodeLayer = el('g', { class: 'nodes' }, svg);
    this.tokenLayer = el('g', { class: 'tokens' }, svg);

    const drawLabel = (g, rect, lines, anchor = 'middle') => {
      el('rect', { class: 'label-bg', x: rect.x, y: rect.y, width: rect.w, height: rect.h, rx: 3 }, g);
      const x = anchor === 'start' ? rect.x + 3 : rect.x + rect.w / 2;
      lines.forEach((l, i) => {
        el('text', { x, y: rect.y + 10 + i * LABEL_LINE, 'text-anchor': anchor }, g).textContent = l;
      });
    };

    // Short arrows first: they have the fewest good places for a label; into a final state last.
    arrows.sort((p, q) => Number(finalStates.has(p.pair.target)) - Number(finalStates.has(q.pair.target)) || p.length - q.length);
    for (const arrow of arrows) {
      const { pair, c } = arrow;
      const g = el('g', { class: 'edge', 'data-edge': pair.key }, edgeLayer);
      const path = el('path', { d: c.d, 'marker-end': 'url(#arrow)' }, g);
      el('title', {}, g).textContent = `${pair.source} → ${pair.target}: ${pair.details.join(', ')}`;
      const words = pair.labels.map((l) => SHORT[l] ?? l);
      const lines = words.join(', ').length <= 20 ? [words.join(', ')] : words;
      const rect = placeLabel(arrow, lines);
      labels.push(rect);
      const lg = el('g', { class: 'label', 'data-edge': pair.key }, labelLayer);
      drawLabel(lg, rect, lines);
      this.edges.set(pair.key, { g, path, label: lg });
    }
    for (const { key, target, group, lines, from, to, rect } of stubs) {
      const whence = (n) => `${n.label} from ${n.sources.includes('*') ? 'any state' : n.sources.join(', ')}`;
      const g = el('g', { class: 'edge any', 'data-edge': key }, edgeLayer);
      const path = el('path', { d: `M${from.x},${from.y} L${to.x},${to.y}`, 'marker-end': 'url(#arrow)' }, g);
      el('title', {}, g).textContent = `${group.map(whence).join('; ')} → ${target}`;
      const lg = el('g', { class: 'label note', 'data-edge': key }, labelLayer);
      drawLabel(lg, rect, lines, rect.x > to.x ? 'start' : 'middle');
      el('title', {}, lg).textContent = group.map(whence).join('; ');
      for (const note of group) this.notes.push({ ...note, g, path });
    }
    for (const s of doc.states) {
      const c = centers.get(s.name);
      const g = el('g', { class: `node${s.type === 'final' ? ' final' : ''}`, 'data-state': s.name }, nodeLayer);
      if (KNOWN.has(s.name)) g.style.setProperty('--fill', `var(--${s.name})`);
      el('rect', { x: c.x - W / 2, y: c.y - H / 2, width: W, height: H, rx: s.type === 'final' ? H / 2 : 6 }, g);
      el('text', { x: c.x, y: c.y - 5 }, g).textContent = s.name;
      el('title', {}, g).textContent = `${s.name}${s.invokes.length ? ` (runs ${s.invokes.join(', ')})` : ''}: click to list its processes`;
      g.addEventListener('click', () => onStateClick(s.name));
      const count = el('text', { class: 'count', x: c.x, y: c.y + 9 }, g);
      count.textContent = '0';
      this.nodes.set(s.name, { g, count });
    }
    // The picture's extent: everything drawn, plus a margin.
    const all = [...boxes, ...labels];
    const minX = Math.min(...all.map((r) => r.x)) - 4;
    const minY = Math.min(...all.map((r) => r.y)) - 4;
    const maxX = Math.max(...all.map((r) => r.x + r.w)) + 4;
    const maxY = Math.max(...all.map((r) => r.y + r.h)) + 4;
    svg.setAttribute('viewBox', `${minX.toFixed(0)} ${minY.toFixed(0)} ${(maxX - minX).toFixed(0)} ${(maxY - minY).toFixed(0)}`);
    container.replaceChildren(svg);
  }

  /** counts: Map state → number of processes; current: the selected process's state. */
  update(counts, current) {
    for (const [name, { g, count }] of this.nodes) {
      const n = counts.get(name) ?? 0;
      const label = String(n);
      if (count.textContent !== label) count.textContent = label;
      g.classList.toggle('occupied', n > 0);
      g.classList.toggle('current', name === current);
    }
  }

  /** Animates one transition: a token along its arrow, a pulse on the state entered. */
  animate(from, to, highlight = false) {
    const node = this.nodes.get(to);
    if (node) {
      node.g.classList.remove('pulse');
      void node.g.getBBox(); // restart the CSS animation
      node.g.classList.add('pulse');
    }
    if (!from || from === to || this.tokens >= MAX_TOKENS) return;
    const direct = this.edges.get(`${from}>${to}`);
    const edge = direct ?? this.notes.find((n) => n.target === to && (n.sources.includes(from) || n.sources.includes('*')));
    // A stubbed transition travels straight from its state; its stub lights up.
    let path = direct ? direct.path : null;
    let temporary = null;
    if (!path) {
      const a = this.centers.get(from);
      const b = this.centers.get(to);
      if (!a || !b) return;
      temporary = el('path', { d: curve(a, b, 0).d, fill: 'none', stroke: 'none' }, this.tokenLayer);
      path = temporary;
    }
    if (edge && highlight) {
      edge.g.classList.add('lit');
      setTimeout(() => edge.g.classList.remove('lit'), 700);
    }
    const token = el('circle', { r: highlight ? 5 : 4, class: 'token' }, this.tokenLayer);
    const length = path.getTotalLength();
    const start = performance.now();
    const duration = 650;
    this.tokens++;
    const step = (now) => {
      const t = Math.min(1, (now - start) / duration);
      const p = path.getPointAtLength(length * (1 - (1 - t) * (1 - t)));
      token.setAttribute('cx', p.x.toFixed(1));
      token.setAttribute('cy', p.y.toFixed(1));
      if (t < 1) requestAnimationFrame(step);
      else {
        token.remove();
        temporary?.remove();
        this.tokens--;
      }
    };
    requestAnimationFrame(step);
  }
}
