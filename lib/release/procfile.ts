// Procfile parser following smartmob RFC 1
// (https://smartmob-rfc.readthedocs.io/en/latest/1-procfile.html).
// Choices the RFC leaves open, made explicit here:
//   - Text must be UTF-8 without BOM. Invalid UTF-8, NUL and other control
//     characters (anything below U+0020 except tab, plus U+007F) are errors:
//     they mean the file is binary or mangled, and would reach the shell.
//   - Lines end in LF or CRLF (one trailing CR per line is dropped). A CR
//     anywhere else (classic Mac line endings) is an error.
//   - Leading spaces/tabs are ignored. Blank lines and lines whose first
//     non-blank character is "#" are ignored; a "#" later in a command is left
//     for the shell.
//   - An entry is "<type>:<command>"; the type is TYPE_PATTERN below and must
//     touch the colon. The command is everything after the first colon,
//     trimmed, and must not be empty.
//   - A line ending in an odd number of backslashes continues onto the next
//     line; the final backslash and the newline are dropped, as sh does
//     (an even number is escaped backslashes, not a continuation). Comment
//     lines never continue.
//   - Leading NAME=value words are moved from the command into the entry's
//     env (see takeAssignments). An empty Procfile is an error.

/** Process types: letters, digits, "_" and "-", not starting with "-" (it
 *  would read as a CLI flag) and without "." (node names are "<type>.<n>"),
 *  at most 63 characters (one DNS label). */
export const TYPE_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/;

export const DEFAULT_PROCFILE_MAX_BYTES = 64 * 1024;

export interface ProcfileEntry {
  type: string;
  command: string;
  env: Record<string, string>;
  /** 1-based line on which the entry starts (0 for an entry that is not in a Procfile). */
  line: number;
  /** Set when the entry is not the Procfile's: `web: npm start` for an app with a start script and no Procfile. */
  from?: 'package.json';
}

export class ProcfileError extends Error {
  override name = 'ProcfileError';
  line?: number;
  constructor(detail: string, line?: number) {
    super(line === undefined ? `Procfile: ${detail}` : `Procfile line ${line}: ${detail}`);
    this.line = line;
  }
}

export function parseProcfile(input: string | Buffer, opts: { maxBytes?: number } = {}): Map<string, ProcfileEntry> {
  const text = decode(input, opts.maxBytes ?? DEFAULT_PROCFILE_MAX_BYTES);
  const lines = text.split('\n');
  if (text.endsWith('\n')) lines.pop(); // a final newline ends the last line, it doesn't start another
  const entries = new Map<string, ProcfileEntry>();

  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    let logical = stripCR(lines[i], line).replace(/^[ \t]+/, '');
    if (logical === '' || logical.startsWith('#')) continue;
    while (continues(logical)) {
      if (++i >= lines.length) throw new ProcfileError('line continuation "\\" at end of file', line);
      logical = logical.slice(0, -1) + stripCR(lines[i], i + 1);
    }
    const entry = parseEntry(logical, line);
    const first = entries.get(entry.type);
    if (first) {
      throw new ProcfileError(`duplicate process type "${entry.type}" (first defined on line ${first.line})`, line);
    }
    entries.set(entry.type, entry);
  }
  if (entries.size === 0) throw new ProcfileError('no process types defined');
  return entries;
}

/** "web, worker" — for messages like "unknown process type X; the Procfile has: web, worker". */
export function describeTypes(procfile: Map<string, ProcfileEntry>): string {
  return procfile.size === 0 ? '(none)' : [...procfile.keys()].join(', ');
}

function decode(input: string | Buffer, maxBytes: number): string {
  const size = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.length;
  if (size > maxBytes) throw new ProcfileError(`file is ${size} bytes; the limit is ${maxBytes}`);

  let text: string;
  if (typeof input === 'string') {
    text = input;
    const lone = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.exec(text);
    if (lone) throw new ProcfileError('not valid Unicode (unpaired surrogate)', lineAt(text, lone.index));
  } else {
    if (input[0] === 0xef && input[1] === 0xbb && input[2] === 0xbf) throw bomError();
    const nul = input.indexOf(0);
    if (nul >= 0) throw nulError(lineAt(input.subarray(0, nul).toString('latin1'), nul));
    text = decodeUtf8(input);
  }
  if (text.startsWith('\uFEFF')) throw bomError();

  const ctl = /[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]/.exec(text);
  if (ctl) {
    const line = lineAt(text, ctl.index);
    if (ctl[0] === '\0') throw nulError(line);
    const code = ctl[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    throw new ProcfileError(`contains control character U+${code}; a Procfile must be plain text`, line);
  }
  return text;
}

function decodeUtf8(buf: Buffer): string {
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  try {
    return decoder.decode(buf);
  } catch {
    // LF never occurs inside a multi-byte sequence, so lines can be checked one by one.
    let start = 0;
    for (let line = 1; ; line++) {
      const end = buf.indexOf(0x0a, start);
      try {
        decoder.decode(buf.subarray(start, end < 0 ? buf.length : end));
      } catch {
        throw new ProcfileError('not valid UTF-8', line);
      }
      if (end < 0) throw new ProcfileError('not valid UTF-8');
      start = end + 1;
    }
  }
}

const bomError = () => new ProcfileError('starts with a byte order mark (BOM); save it as UTF-8 without BOM', 1);
const nulError = (line: number) => new ProcfileError('contains a NUL byte; a Procfile must be plain text, not binary', line);

function lineAt(text: string, index: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i >= 0 && i < index; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

function stripCR(raw: string, line: number): string {
  const s = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
  if (s.includes('\r')) throw new ProcfileError('carriage return inside a line (use LF or CRLF line endings)', line);
  return s;
}

function continues(s: string): boolean {
  let n = 0;
  while (n < s.length && s[s.length - 1 - n] === '\\') n++;
  return n % 2 === 1;
}

function parseEntry(text: string, line: number): ProcfileEntry {
  const colon = text.indexOf(':');
  if (colon < 0) throw new ProcfileError('expected "<type>: <command>"', line);
  const type = text.slice(0, colon);
  if (type === '') throw new ProcfileError('missing process type before ":"', line);
  if (!TYPE_PATTERN.test(type)) {
    const hint = TYPE_PATTERN.test(type.trimEnd())
      ? 'no space is allowed before ":"'
      : 'use up to 63 letters, digits, "_" or "-", not starting with "-"';
    throw new ProcfileError(`invalid process type "${type}"; ${hint}`, line);
  }
  const rest = text.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
  if (rest === '') throw new ProcfileError(`empty command for process type "${type}"`, line);
  const { env, command } = takeAssignments(rest, type, line);
  return { type, command, env, line };
}

/**
 * Moves leading shell-style assignments (NAME=value ...) out of the command.
 * Values may be plain words, '...' (literal) or "..." (with \" \\ \$ \`
 * escapes), concatenated as in sh. A value that needs the shell ($, `, ~,
 * or an operator like ; | & < > ( )) stops the stripping: it and the rest
 * stay in the command, where sh still applies them correctly.
 */
function takeAssignments(text: string, type: string, line: number) {
  const env = new Map<string, string>(); // a Map, so a name like __proto__ is just a name
  let i = 0;
  for (;;) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=/.exec(text.slice(i));
    if (!m) break;
    const value = readValue(text, i + m[0].length, m[1], line);
    if (!value) break;
    env.set(m[1], value.value);
    i = value.end;
    while (text[i] === ' ' || text[i] === '\t') i++;
    if (i >= text.length) {
      throw new ProcfileError(`command for process type "${type}" has only variable assignments`, line);
    }
  }
  return { env: Object.fromEntries(env), command: text.slice(i) };
}

const NEEDS_SHELL = new Set(['$', '`', '~', ';', '&', '|', '<', '>', '(', ')']);

function readValue(s: string, i: number, name: string, line: number) {
  let value = '';
  while (i < s.length && s[i] !== ' ' && s[i] !== '\t') {
    const c = s[i];
    if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) throw unterminated(name, line);
      value += s.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      for (i++; s[i] !== '"'; i++) {
        if (i >= s.length) throw unterminated(name, line);
        if (s[i] === '$' || s[i] === '`') return null;
        if (s[i] === '\\' && '"\\$`'.includes(s[i + 1] ?? 'x')) i++;
        value += s[i];
      }
      i++;
    } else if (c === '\\') {
      if (i + 1 >= s.length) return null;
      value += s[i + 1];
      i += 2;
    } else if (NEEDS_SHELL.has(c)) {
      return null;
    } else {
      value += c;
      i++;
    }
  }
  return { value, end: i };
}

const unterminated = (name: string, line: number) => new ProcfileError(`unterminated quote in the value of ${name}`, line);
