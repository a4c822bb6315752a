// The process state machine drawn as SVG from GET /machine: how many processes are in each
// state, the selected process's state highlighted, and a token travelling along the arrow of
// every transition as it happens.

const SVG = 'http://www.w3.org/2000/svg';
const W = 118;
const H = 40;
const STEP_X = 186;
const FINAL_GAP = 1.45; // the column of final states sits further out, so arrows into it keep their labels apart
const STEP_Y = 128;
const MARGIN = 28;
const MAX_COLS = 4;
const MAX_TOKENS = 24; // with many processes changing at once, animate a sample: the counts stay exact
const KNOWN = new Set(['pending', 'downloading', 'building', 'running', 'exited', 'restarting', 'deleted']);

function el(name, attrs = {}, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  parent?.appendChild(node);
  return node;
}

/**
 * Places states on a grid: rank by longest path from the initial state ignoring back edges,
 * snake the ranks over rows of at most MAX_COLS, final states in a column on the right.
 * Exported for the layout's own sake; the diagram is the only user.
 */
export function layout(doc) {
  const names = doc.states.map((s) => s.name);
  const finals = doc.states.filter((s) => s.type === 'final').map((s) => s.name);
  const inner = names.filter((n) => !finals.includes(n));
  const edges = doc.transitions.filter((t) => t.source !== '*' && t.source !== t.target);
  const out = new Map(names.map((n) => [n, []]));
  for (const e of edges) out.get(e.source)?.push(e.target);

  const back = new Set();
  const visited = new Set();
  const stack = new Set();
  const visit = (n) => {
    visited.add(n);
    stack.add(n);
    for (const m of out.get(n) ?? []) {
      if (stack.has(m)) back.add(`${n}>${m}`);
      else if (!visited.has(m)) visit(m);
    }
    stack.delete(n);
  };
  if (out.has(doc.initial)) visit(doc.initial);
  for (const n of names) if (!visited.has(n)) visit(n);

  const rank = new Map();
  const rankOf = (n) => {
    if (rank.has(n)) return rank.get(n);
    rank.set(n, 0); // guards against a cycle the DFS did not classify
    let r = 0;
    for (const e of edges) if (e.target === n && !back.has(`${e.source}>${n}`)) r = Math.max(r, rankOf(e.source) + 1);
    rank.set(n, r);
    return r;
  };
  const order = [...inner].sort((a, b) => rankOf(a) - rankOf(b) || names.indexOf(a) - names.indexOf(b));
  const cols = Math.max(1, Math.min(MAX_COLS, order.length));
  const pos = new Map();
  order.forEach((n, i) => {
    const row = Math.floor(i / cols);
    const col = row % 2 === 0 ? i % cols : cols - 1 - (i % cols);
    pos.set(n, { col, row });
  });
  const hasAny = doc.transitions.some((t) => t.source === '*');
  finals.forEach((n, i) => pos.set(n, { col: cols, row: i + (hasAny ? 1 : 0) }));
  const rows = Math.max(1, Math.ceil(order.length / cols), finals.length + (hasAny ? 1 : 0));
  const x = (col) => (col < cols ? col : cols - 1 + FINAL_GAP) * STEP_X;
  const xy = (p) => ({ x: MARGIN + W / 2 + x(p.col), y: MARGIN + H / 2 + p.row * STEP_Y });
  const centers = new Map([...pos].map(([n, p]) => [n, xy(p)]));
  const anyCenter = hasAny ? xy({ col: cols, row: 0 }) : null;
  return {
    centers,
    anyCenter,
    width: MARGIN * 2 + W + x(finals.length || hasAny ? cols : cols - 1),
    height: MARGIN * 2 + H + (rows - 1) * STEP_Y,
  };
}

/** Where the segment from the centre `c` towards `p` leaves a W×H box. */
function clip(c, p, w = W, h = H) {
  const dx = p.x - c.x;
  const dy = p.y - c.y;
  if (dx === 0 && dy === 0) return c;
  const t = Math.min(dx ? w / 2 / Math.abs(dx) : Infinity, dy ? h / 2 / Math.abs(dy) : Infinity);
  return { x: c.x + dx * t, y: c.y + dy * t };
}

function curve(a, b, bend, boxA = [W, H], boxB = [W, H], at = 0.5) {
  const mx = (a.x + b.x) / 2;
  const my = (a.y + b.y) / 2;
  const len = Math.hypot(b.x - a.x, b.y - a.y) || 1;
  const ctrl = { x: mx - ((b.y - a.y) / len) * bend, y: my + ((b.x - a.x) / len) * bend };
  const p0 = clip(a, ctrl, ...boxA);
  const p2 = clip(b, ctrl, ...boxB);
  return {
    d: `M${p0.x.toFixed(1)},${p0.y.toFixed(1)} Q${ctrl.x.toFixed(1)},${ctrl.y.toFixed(1)} ${p2.x.toFixed(1)},${p2.y.toFixed(1)}`,
    // The label's anchor: the point of the curve at `at`.
    mid: {
      x: (1 - at) ** 2 * p0.x + 2 * (1 - at) * at * ctrl.x + at ** 2 * p2.x,
      y: (1 - at) ** 2 * p0.y + 2 * (1 - at) * at * ctrl.y + at ** 2 * p2.y,
    },
  };
}

export class Diagram {
  /** onStateClick(name): a state box was clicked (the dashboard filters the list by it). */
  constructor(container, doc, onStateClick = () => {}) {
    this.doc = doc;
    this.nodes = new Map();
    this.edges = new Map();
    this.tokens = 0;
    const { centers, anyCenter, width, height } = layout(doc);
    this.centers = centers;
    const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `State machine ${doc.id}` });
    this.svg = svg;
    const defs = el('defs', {}, svg);
    const marker = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, defs);
    el('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#9aa4b2' }, marker);
    const edgeLayer = el('g', { class: 'edges' }, svg);
    const nodeLayer = el('g', { class: 'nodes' }, svg);
    this.tokenLayer = el('g', { class: 'tokens' }, svg);

    const finalStates = new Set(doc.states.filter((s) => s.type === 'final').map((s) => s.name));
    // One arrow per pair of states; labels of parallel transitions are merged.
    const pairs = new Map();
    for (const t of doc.transitions) {
      if (t.source === t.target) continue;
      const key = `${t.source}>${t.target}`;
      const pair = pairs.get(key) ?? { source: t.source, target: t.target, labels: [], details: [] };
      if (!pair.labels.includes(t.label)) pair.labels.push(t.label);
      pair.details.push(`${t.event}${t.guard ? ` [${t.guard}]` : ''}`);
      pairs.set(key, pair);
    }
    for (const [key, pair] of pairs) {
      const any = pair.source === '*';
      const a = any ? anyCenter : centers.get(pair.source);
      const b = centers.get(pair.target);
      if (!a || !b) continue;
      const bend = pairs.has(`${pair.target}>${pair.source}`) ? 26 : 0;
      // Arrows into a final state share their source's neighbourhood with others: label them nearer the end.
      const final = finalStates.has(pair.target) && !any;
      const { d, mid } = curve(a, b, bend, any ? [90, 22] : [W, H], [W, H], final ? 0.68 : 0.5);
      const g = el('g', { class: `edge${any ? ' any' : ''}`, 'data-edge': key }, edgeLayer);
      const path = el('path', { d, 'marker-end': 'url(#arrow)' }, g);
      el('title', {}, g).textContent = `${pair.source === '*' ? 'any state' : pair.source} → ${pair.target}: ${pair.details.join(', ')}`;
      const label = pair.labels.join(' / ');
      // Beside a vertical arrow rather than across it, where arrows meet at a state.
      const vertical = Math.abs(a.x - b.x) < 1;
      const lx = vertical ? mid.x + 6 : mid.x;
      const width = label.length * 6.7 + 6;
      el('rect', { class: 'label-bg', x: vertical ? lx - 3 : lx - width / 2, y: mid.y - 8, width, height: 15, rx: 3 }, g);
      el('text', { x: lx, y: mid.y + 3.5, 'text-anchor': vertical ? 'start' : 'middle' }, g).textContent = label;
      this.edges.set(key, { g, path });
    }
    if (anyCenter) {
      const g = el('g', { class: 'any-node' }, nodeLayer);
      el('text', { x: anyCenter.x, y: anyCenter.y + 4 }, g).textContent = 'from any state';
    }
    for (const s of doc.states) {
      const c = centers.get(s.name);
      const g = el('g', { class: `node${s.type === 'final' ? ' final' : ''}`, 'data-state': s.name }, nodeLayer);
      if (KNOWN.has(s.name)) g.style.setProperty('--fill', `var(--${s.name})`);
      el('rect', { x: c.x - W / 2, y: c.y - H / 2, width: W, height: H, rx: s.type === 'final' ? 20 : 7 }, g);
      el('text', { x: c.x, y: c.y - 6 }, g).textContent = s.name;
      el('title', {}, g).textContent = `${s.name}${s.invokes.length ? ` (runs ${s.invokes.join(', ')})` : ''}: click to list its processes`;
      g.addEventListener('click', () => onStateClick(s.name));
      const count = el('text', { class: 'count', x: c.x, y: c.y + 10 }, g);
      count.textContent = '0';
      this.nodes.set(s.name, { g, count });
    }
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
    const edge = this.edges.get(`${from}>${to}`) ?? this.edges.get(`*>${to}`);
    let path = edge?.path;
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
    const token = el('circle', { r: highlight ? 6 : 4.5, class: 'token' }, this.tokenLayer);
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
