// The process list, grouped by app and virtualised: only the rows in view (plus a few) exist in
// the DOM, so a thousand processes cost the same to draw as thirty. Items are processes and,
// before each app's processes, a group row: `{ group: APP, total, counts: [[state, n]...], collapsed }`.

const OVERSCAN = 6;

export class ProcessList {
  /**
   * columns(proc) → the cell texts after the name and state; onSelect(slug) on click or arrows;
   * onToggle(app) when a group row is clicked (collapse or expand it).
   */
  constructor(container, spacer, { columns, onSelect, onToggle = () => {} }) {
    this.container = container;
    this.spacer = spacer;
    this.columns = columns;
    this.onSelect = onSelect;
    this.onToggle = onToggle;
    this.items = [];
    this.selected = null;
    this.rows = []; // pool of process rows
    this.groups = []; // pool of group rows
    this.rowHeight = 28;
    container.addEventListener('scroll', () => this.render(), { passive: true });
    container.addEventListener('click', (e) => {
      const group = e.target.closest('.group');
      if (group?.dataset.app) return this.onToggle(group.dataset.app);
      const row = e.target.closest('.row');
      if (row?.dataset.slug) this.onSelect(row.dataset.slug);
    });
    container.addEventListener('keydown', (e) => {
      if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
      e.preventDefault();
      const procs = this.items.filter((p) => !p.group);
      const i = procs.findIndex((p) => p.slug === this.selected);
      const next = procs[Math.max(0, Math.min(procs.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))];
      if (next) {
        this.onSelect(next.slug);
        this.scrollTo(next.slug);
      }
    });
    new ResizeObserver(() => this.render()).observe(container);
  }

  /** Sets what to show (already filtered, sorted and grouped) and redraws what is in view. */
  setItems(items, selected) {
    this.items = items;
    this.selected = selected;
    this.spacer.style.height = `${items.length * this.rowHeight}px`;
    this.render();
  }

  scrollTo(slug) {
    const i = this.items.findIndex((p) => p.slug === slug);
    if (i < 0) return;
    const top = i * this.rowHeight;
    const { scrollTop, clientHeight } = this.container;
    if (top < scrollTop) this.container.scrollTop = top;
    else if (top + this.rowHeight > scrollTop + clientHeight) this.container.scrollTop = top + this.rowHeight - clientHeight;
  }

  /** Briefly highlights a row that just changed, when it is in view. */
  flash(slug) {
    const row = this.rows.find((r) => r.dataset.slug === slug && !r.hidden);
    if (!row) return;
    row.classList.remove('flash');
    void row.offsetWidth;
    row.classList.add('flash');
  }

  render() {
    const { scrollTop, clientHeight } = this.container;
    const first = Math.max(0, Math.floor(scrollTop / this.rowHeight) - OVERSCAN);
    const last = Math.min(this.items.length, Math.ceil((scrollTop + clientHeight) / this.rowHeight) + OVERSCAN);
    let usedRows = 0;
    let usedGroups = 0;
    for (let i = first; i < last; i++) {
      const item = this.items[i];
      const top = `${i * this.rowHeight}px`;
      if (item.group !== undefined) {
        if (usedGroups === this.groups.length) this.groups.push(this.makeGroup());
        const row = this.groups[usedGroups++];
        row.hidden = false;
        row.style.top = top;
        row.dataset.app = item.group;
        row.setAttribute('aria-expanded', String(!item.collapsed));
        const [name, count, states] = row.children;
        set(name, item.group);
        set(count, `${item.total} process${item.total === 1 ? '' : 'es'}`);
        const html = item.counts.map(([s, n]) => `<span data-state="${s}">${n} ${s}</span>`).join('');
        if (states.innerHTML !== html) states.innerHTML = html;
        continue;
      }
      if (usedRows === this.rows.length) this.rows.push(this.makeRow());
      const row = this.rows[usedRows++];
      row.hidden = false;
      row.style.top = top;
      if (row.dataset.slug !== item.slug) row.dataset.slug = item.slug;
      row.setAttribute('aria-selected', String(item.slug === this.selected));
      const cells = row.children;
      // Under its app's row, a process is named by its node; the slug is in the tooltip.
      set(cells[0], item.node ?? item.slug);
      cells[0].title = item.slug;
      const shown = item.shownState ?? item.state;
      set(cells[1].firstChild, shown);
      if (cells[1].firstChild.dataset.state !== shown) cells[1].firstChild.dataset.state = shown;
      const values = this.columns(item);
      for (let c = 0; c < values.length; c++) set(cells[c + 2], values[c]);
    }
    for (let i = usedRows; i < this.rows.length; i++) {
      this.rows[i].hidden = true;
      this.rows[i].dataset.slug = '';
    }
    for (let i = usedGroups; i < this.groups.length; i++) {
      this.groups[i].hidden = true;
      this.groups[i].dataset.app = '';
    }
  }

  makeRow() {
    const row = document.createElement('div');
    row.className = 'row';
    row.setAttribute('role', 'option');
    row.innerHTML =
      '<span class="slug"></span><span><span class="state"></span></span><span class="num"></span><span class="num"></span><span class="num"></span><span class="num"></span><span class="num"></span>';
    this.container.appendChild(row);
    return row;
  }

  makeGroup() {
    const row = document.createElement('div');
    row.className = 'group';
    row.setAttribute('role', 'group');
    row.innerHTML = '<b class="app"></b><span class="total muted"></span><span class="counts"></span>';
    this.container.appendChild(row);
    return row;
  }
}

function set(node, value) {
  if (node.textContent !== value) node.textContent = value;
}
