// A console pane fed by a WebSocket, one line per frame: it opens with the process's recent
// output from its log (attach's `?tail=`), then goes on live, with no gap and no line twice.
// It keeps at most MAX_LINES and redraws at most DRAW_HZ times a second as a single text node,
// so a process printing thousands of lines a second costs one cheap DOM update per tick and a
// bounded amount of memory.

export const MAX_LINES = 2000;
const DRAW_MS = 100;

export class ConsoleView {
  constructor(element, note) {
    this.element = element;
    this.note = note;
    this.lines = [];
    this.text = document.createTextNode('');
    this.received = 0;
    this.timer = 0;
    this.dirty = false;
    this.ws = null;
  }

  /** Streams `url` into the pane, replacing whatever was there; the last MAX_LINES lines of history first. */
  open(url, label) {
    this.close();
    const u = new URL(url, location.href);
    u.searchParams.set('tail', String(MAX_LINES));
    url = u.toString();
    this.lines = [];
    this.received = 0;
    this.text = document.createTextNode('');
    this.element.replaceChildren(this.text);
    this.label = label;
    this.setNote('connecting…');
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => this.setNote(`attached to ${label}: history, then live`);
    ws.onmessage = (e) => {
      this.lines.push(typeof e.data === 'string' ? e.data : '[binary frame]');
      this.received++;
      // Trim in batches: one splice per MAX_LINES/2 lines instead of a shift per line.
      if (this.lines.length > MAX_LINES * 1.5) this.lines.splice(0, this.lines.length - MAX_LINES);
      this.schedule();
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.draw();
      this.setNote(
        e.code === 1000 ? `${label} ended (${e.reason || 'closed'})` : `detached from ${label}${e.reason ? `: ${e.reason}` : ''}`,
      );
    };
  }

  close() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = null;
      ws.onclose = null;
      ws.close();
    }
    clearTimeout(this.timer);
    this.timer = 0;
  }

  setNote(text) {
    this.note.textContent = text;
  }

  schedule() {
    this.dirty = true;
    if (!this.timer) this.timer = setTimeout(() => this.draw(), DRAW_MS);
  }

  draw() {
    this.timer = 0;
    if (!this.dirty) return;
    this.dirty = false;
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
    const el = this.element;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
    this.text.data = this.lines.join('\n');
    if (atBottom) el.scrollTop = el.scrollHeight;
    const n = this.received;
    if (!this.ws) return;
    this.setNote(`${this.label}: ${n} line${n === 1 ? '' : 's'}${n > MAX_LINES ? `, last ${MAX_LINES} kept` : ''} · live`);
  }

  /** Lines currently shown. */
  get lineCount() {
    return Math.min(this.lines.length, MAX_LINES);
  }
}
