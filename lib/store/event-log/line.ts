// The line format of the event log: one JSON object a line, `{"id":N,"time":"…","type":"…",…}\n`,
// id first so that readers (the log itself, the HTTP streams) can pick ids and types out of a
// line without parsing it. Segment files are named by the id of their first event.

/** Where a reader is: the next id it wants, and where that id's line starts on disk if known. */
export interface Cursor {
  id: number;
  seg: number;
  pos: number;
}

export interface ReadResult {
  /** Complete NDJSON lines, each ending in "\n". */
  lines: string[];
  next: Cursor;
}

/** A cursor at `id` whose place on disk is not known yet. */
export function cursorAt(id: number): Cursor {
  return { id, seg: -1, pos: 0 };
}

const SEGMENT = /^(\d{16})\.ndjson$/;

/** DIR/<id of the segment's first event, 16 digits>.ndjson */
export const segmentName = (start: number) => `${String(start).padStart(16, '0')}.ndjson`;

/** The first id of a segment file's name, or null for any other file. */
export function segmentStart(name: string): number | null {
  const m = SEGMENT.exec(name);
  return m ? Number(m[1]) : null;
}

let now: string | null = null;
const forgetNow = () => {
  now = null;
};
/**
 * The current time as ISO 8601, read once per synchronous run: every line of one chunk of
 * output arrived together and gets the same time, for one clock read instead of thousands.
 */
function isoNow(): string {
  if (now === null) {
    now = new Date().toISOString();
    queueMicrotask(forgetNow);
  }
  return now;
}

/** The line of event `id` of `type` with `fields` (which must not hold id, time or type). */
export function eventLine(id: number, type: string, fields?: Record<string, unknown>): string {
  let rest = '}\n';
  if (fields) {
    const json = JSON.stringify(fields);
    if (json.length > 2) rest = `,${json.slice(1)}\n`;
  }
  return `{"id":${id},"time":"${isoNow()}","type":"${type}"${rest}`;
}

/** The line of an output event: the hot path, so no object is built for it. */
export function outputLine(id: number, stream: string, text: string): string {
  return `{"id":${id},"time":"${isoNow()}","type":"output","stream":"${stream}","text":${JSON.stringify(text)}}\n`;
}

/** The id at the start of an event line (`{"id":N,...`), or -1 if the line is not one of ours. */
export function lineId(line: string | Buffer, start = 0): number {
  const get = typeof line === 'string' ? (i: number) => line.charCodeAt(i) : (i: number) => line[i];
  const prefix = '{"id":';
  for (let i = 0; i < prefix.length; i++) if (get(start + i) !== prefix.charCodeAt(i)) return -1;
  let n = 0;
  let i = start + prefix.length;
  const first = i;
  for (let c = get(i); c >= 48 && c <= 57; c = get(++i)) n = n * 10 + (c - 48);
  return i === first || get(i) !== 44 ? -1 : n;
}

/** The `type` of an event line, read without parsing it (ids and times hold no quotes). */
export function lineType(line: string): string {
  const at = line.indexOf('"type":"');
  if (at === -1) return '';
  return line.slice(at + 8, line.indexOf('"', at + 8));
}

/** The event's JSON object: the line without its newline. */
export function lineJson(line: string): string {
  return line.slice(0, -1);
}

/** The text of an output event line; undefined for any other event. */
export function outputText(line: string): string | undefined {
  return lineType(line) === 'output' ? (JSON.parse(line) as { text: string }).text : undefined;
}

/**
 * The id of a line (without its newline) that is a whole, valid event; null for a torn or
 * damaged one. Parses it: meant for the few lines checked when a log is opened.
 */
export function validLineId(text: string): number | null {
  const id = lineId(text);
  if (id < 1) return null;
  try {
    const v = JSON.parse(text) as { id?: unknown; type?: unknown };
    return v.id === id && typeof v.type === 'string' ? id : null;
  } catch {
    return null;
  }
}
