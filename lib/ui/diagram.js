// The process state machine drawn as SVG from GET /machine: how many processes are in each
// state, the selected process's state highlighted, and a token travelling along the arrow of
// every transition as it happens.

const SVG = 'http://www.w3.org/2000/svg';
const W = 118;
const H = 40;
const STEP_X = 186;
const FINAL_GAP = 1.45; // the column of final states sits further out, so arrows into it keep their labels apart
const STEP_Y = 148;
const MARGIN = 28;
const MAX_COLS = 4;
const MAX_TOKENS = 24;
const MANY = 3; // sources of one event into one state from which it is drawn as a note // with many processes changing at once, animate a sample: the counts stay exact
const KNOWN = new Set(['pending', 'downloading', 'building', 'running', 'exited', 'restarting', 'deleted']);

function el(name, attrs = {}, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  parent?.appendChild(node);
  return node;
}

/**
 * Events that reach one state from many others (STOP from every busy state, DELETE from any
 * state) are drawn once, as an arrow from a note naming the sources, instead of a fan of
 * arrows across the picture. Returns { notes: [{ key, target, label, sources }], drawn }.
 */
export function groupTransitions(doc) {
  const bySignature = new Map();
  for (const t of doc.transitions) {
    if (t.source === t.target) continue;
    const key = `${t.label}>${t.target}`;
    const g = bySignature.get(key) ?? { key, target: t.target, label: t.label, sources: [] };
    if (!g.sources.includes(t.source)) g.sources.push(t.source);
    bySignature.set(key, g);
  }
  const notes = [...bySignature.values()].filter((g) => g.sources.includes('*') || g.sources.length >= MANY);
  const noted = new Set(notes.map((g) => g.key));
  const drawn = doc.transitions.filter((t) => t.source !== t.target && !noted.has(`${t.label}>${t.target}`));
  return { notes, drawn };
}

/**
 * Places states on a grid in the order the machine declares them (its author's reading order
 * of the main flow), snaking over rows of at most MAX_COLS; final states in a column on the
 * right; each note above (for "any state") or below the state it points at.
 */
export function layout(doc, notes) {
  const finals = doc.states.filter((s) => s.type === 'final').map((s) => s.name);
  const inner = doc.states.map((s) => s.name).filter((n) => !finals.includes(n));
  const cols = Math.max(1, Math.min(MAX_COLS, inner.length));
  const pos = new Map();
  inner.forEach((n, i) => {
    const row = Math.floor(i / cols);
    pos.set(n, { col: row % 2 === 0 ? i % cols : cols - 1 - (i % cols), row });
  });
  // Final states beside the last row, where a machine's main flow usually ends.
  const lastRow = Math.max(0, Math.ceil(inner.length / cols) - 1);
  finals.forEach((n, i) => pos.set(n, { col: cols, row: lastRow + i }));
  const x = (col) => (col < cols ? col : cols - 1 + FINAL_GAP) * STEP_X;
  const xy = (p) => ({ x: MARGIN + W / 2 + x(p.col), y: MARGIN + H / 2 + p.row * STEP_Y });
  const centers = new Map([...pos].map(([n, p]) => [n, xy(p)]));
  const noteCenters = new Map();
  for (const note of notes) {
    const p = pos.get(note.target);
    if (!p) continue;
    const any = note.sources.includes('*');
    noteCenters.set(note.key, xy({ col: p.col, row: any ? p.row - 1 : p.row + 0.72 }));
  }
  const ys = [...centers.values(), ...noteCenters.values()].map((c) => c.y);
  const top = Math.min(0, Math.min(...ys) - MARGIN - H / 2);
  if (top < 0) for (const c of [...centers.values(), ...noteCenters.values()]) c.y -= top;
  const maxY = Math.max(...[...centers.values(), ...noteCenters.values()].map((c) => c.y));
  return {
    centers,
    noteCenters,
    width: MARGIN * 2 + W + x(finals.length ? cols : cols - 1),
    height: maxY + H / 2 + MARGIN,
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
    ctrl,
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
    const { notes, drawn } = groupTransitions(doc);
    const { centers, noteCenters, width, height } = layout(doc, notes);
    this.centers = centers;
    this.notes = [];
    const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `State machine ${doc.id}` });
    this.svg = svg;
    const defs = el('defs', {}, svg);
    const marker = el(
      'marker',
      { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      defs,
    );
    el('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#9aa4b2' }, marker);
    const edgeLayer = el('g', { class: 'edges' }, svg);
    const nodeLayer = el('g', { class: 'nodes' }, svg);
    this.tokenLayer = el('g', { class: 'tokens' }, svg);

    const finalStates = new Set(doc.states.filter((s) => s.type === 'final').map((s) => s.name));
    // Boxes already taken (states, then each label as it is placed), so labels avoid them.
    const taken = [...centers.values(), ...noteCenters.values()].map((c) => ({ x: c.x - W / 2, y: c.y - H / 2, w: W, h: H }));
    const overlap = (r) =>
      taken.reduce(
        (sum, o) =>
          sum +
          Math.max(0, Math.min(r.x + r.w, o.x + o.w) - Math.max(r.x, o.x)) *
            Math.max(0, Math.min(r.y + r.h, o.y + o.h) - Math.max(r.y, o.y)),
        0,
      );

    const arrow = (key, a, b, bend, labels, title, { boxA = [W, H], at = 0.5, any = false } = {}) => {
      const { d, ctrl } = curve(a, b, bend, boxA, [W, H], at);
      const g = el('g', { class: `edge${any ? ' any' : ''}`, 'data-edge': key }, edgeLayer);
      const path = el('path', { d, 'marker-end': 'url(#arrow)' }, g);
      el('title', {}, g).textContent = title;
      // Where to put the label: beside a vertical arrow, on the outer side of a bent one, else
      // centred on it; along the arrow wherever it covers the least of what is already drawn.
      const vertical = Math.abs(a.x - b.x) < 1;
      const steep = Math.abs(b.y - a.y) > Math.abs(b.x - a.x);
      const side = bend ? Math.sign(steep ? ctrl.x - (a.x + b.x) / 2 : ctrl.y - (a.y + b.y) / 2) : 0;
      const width = Math.max(...labels.map((l) => l.length)) * 6.7 + 6;
      const height = labels.length * 14 + 2;
      const place = (t) => {
        const mid = curve(a, b, bend, boxA, [W, H], t).mid;
        let anchor = 'middle';
        let lx = mid.x;
        let ly = mid.y;
        if (vertical && !bend) [anchor, lx] = ['start', mid.x + 6];
        else if (side && steep) [anchor, lx] = side < 0 ? ['end', mid.x - 5] : ['start', mid.x + 5];
        else if (side) ly = mid.y + side * 10;
        const left = anchor === 'start' ? lx - 3 : anchor === 'end' ? lx - width + 3 : lx - width / 2;
        return { anchor, lx, rect: { x: left, y: ly - height / 2, w: width, h: height } };
      };
      let best = null;
      for (const t of [at, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.18, 0.82, 0.12, 0.88]) {
        const p = place(t);
        const cost = overlap(p.rect);
        if (!best || cost < best.cost) best = { ...p, cost };
        if (cost === 0) break;
      }
      const { anchor, lx, rect } = best;
      taken.push(rect);
      el('rect', { class: 'label-bg', x: rect.x, y: rect.y, width: rect.w, height: rect.h, rx: 3 }, g);
      labels.forEach((l, i) => {
        el('text', { x: lx, y: rect.y + 12 + i * 14, 'text-anchor': anchor }, g).textContent = l;
      });
      return { g, path };
    };

    // One arrow per pair of states; labels of parallel transitions are merged.
    const pairs = new Map();
    for (const t of drawn) {
      const key = `${t.source}>${t.target}`;
      const pair = pairs.get(key) ?? { source: t.source, target: t.target, labels: [], details: [] };
      if (!pair.labels.includes(t.label)) pair.labels.push(t.label);
      pair.details.push(`${t.event}${t.guard ? ` [${t.guard}]` : ''}`);
      pairs.set(key, pair);
    }
    const length = (p) => {
      const a = centers.get(p.source);
      const b = centers.get(p.target);
      return a && b ? Math.hypot(a.x - b.x, a.y - b.y) : 0;
    };
    // Short arrows first: they have the fewest good places for a label.
    for (const [key, pair] of [...pairs].sort(([, p], [, q]) => length(p) - length(q))) {
      const a = centers.get(pair.source);
      const b = centers.get(pair.target);
      if (!a || !b) continue;
      const bend = pairs.has(`${pair.target}>${pair.source}`) ? 26 : 0;
      // Arrows into a final state share their source's neighbourhood with others: label them nearer the end.
      const at = finalStates.has(pair.target) ? 0.68 : 0.5;
      const title = `${pair.source} → ${pair.target}: ${pair.details.join(', ')}`;
      this.edges.set(key, arrow(key, a, b, bend, pair.labels, title, { at }));
    }
    for (const note of notes) {
      const a = noteCenters.get(note.key);
      const b = centers.get(note.target);
      if (!a || !b) continue;
      const from = note.sources.includes('*') ? 'from any state' : `from ${note.sources.join(', ')}`;
      const edge = arrow(`note:${note.key}`, a, b, 0, [note.label], `${note.label} ${from} → ${note.target}`, {
        boxA: [from.length * 6.2, 22],
        any: true,
      });
      this.notes.push({ ...note, ...edge });
      el('text', { class: 'note', x: a.x, y: a.y + 4 }, el('g', { class: 'any-node' }, nodeLayer)).textContent = from;
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
    const edge =
      this.edges.get(`${from}>${to}`) ?? this.notes.find((n) => n.target === to && (n.sources.includes(from) || n.sources.includes('*')));
    // A noted transition travels straight from its state; its note lights up.
    let path = edge && this.edges.get(`${from}>${to}`) ? edge.path : null;
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
