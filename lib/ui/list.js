// The process list, virtualised: only the rows in view (plus a few) exist in the DOM, so a
// thousand processes cost the same to draw as thirty.

const OVERSCAN = 6;

export class ProcessList {
  /**
   * columns(proc) → the cell texts after the slug and state; onSelect(slug) on click or arrows.
   */
  constructor(container, spacer, { columns, onSelect }) {
    this.container = container;
    this.spacer = spacer;
    this.columns = columns;
    this.onSelect = onSelect;
    this.items = [];
    this.selected = null;
    this.rows = []; // pool of row elements
    this.rowHeight = 28;
    container.addEventListener('scroll', () => this.render(), { passive: true });
    container.addEventListener('click', (e) => {
      const row = e.target.closest('.row');
      if (row?.dataset.slug) this.onSelect(row.dataset.slug);
    });
    container.addEventListener('keydown', (e) => {
      if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
      e.preventDefault();
      const i = this.items.findIndex((p) => p.slug === this.selected);
      const next = this.items[Math.max(0, Math.min(this.items.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))];
      if (next) {
        this.onSelect(next.slug);
        this.scrollTo(next.slug);
      }
    });
    new ResizeObserver(() => this.render()).observe(container);
  }

  /** Sets what to show (already filtered and sorted) and redraws what is in view. */
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
    const needed = last - first;
    while (this.rows.length < needed) this.rows.push(this.makeRow());
    for (let i = 0; i < this.rows.length; i++) {
      const row = this.rows[i];
      const item = this.items[first + i];
      if (i >= needed || !item) {
        row.hidden = true;
        row.dataset.slug = '';
        continue;
      }
      row.hidden = false;
      row.style.top = `${(first + i) * this.rowHeight}px`;
      if (row.dataset.slug !== item.slug) row.dataset.slug = item.slug;
      row.setAttribute('aria-selected', String(item.slug === this.selected));
      const cells = row.children;
      set(cells[0], item.slug);
      cells[0].title = item.slug;
      set(cells[1].firstChild, item.state);
      if (cells[1].firstChild.dataset.state !== item.state) cells[1].firstChild.dataset.state = item.state;
      const values = this.columns(item);
      for (let c = 0; c < values.length; c++) set(cells[c + 2], values[c]);
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
}

function set(node, value) {
  if (node.textContent !== value) node.textContent = value;
}
