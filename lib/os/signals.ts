import { constants } from 'node:os';

/** A signal as the API shows it: a name where Linux has one, and its number. */
export interface SignalId {
  name: string;
  number: number;
}

const numbers = constants.signals as Record<string, number>;
// First name wins, so aliases (SIGIOT, SIGPOLL) never replace the usual name.
const names = new Map<number, string>();
for (const [name, n] of Object.entries(numbers)) if (!names.has(n)) names.set(n, name);

// glibc reserves 32 and 33 for threads; the real-time signals it offers start at 34.
const RTMIN = 34;
const RTMAX = 64;

/** Signals whose default action dumps core (signal(7)). */
const CORE_SIGNALS = new Set([
  'SIGQUIT',
  'SIGILL',
  'SIGTRAP',
  'SIGABRT',
  'SIGIOT',
  'SIGBUS',
  'SIGFPE',
  'SIGSEGV',
  'SIGSYS',
  'SIGXCPU',
  'SIGXFSZ',
]);

/** The name of signal `n`: Linux's name, SIGRTMIN+k for real-time ones, null for anything else. */
export function signalName(n: number): string | null {
  const name = names.get(n);
  if (name) return name;
  if (Number.isInteger(n) && n >= RTMIN && n <= RTMAX) return n === RTMIN ? 'SIGRTMIN' : `SIGRTMIN+${n - RTMIN}`;
  return null;
}

/**
 * Parses a signal given by name ("SIGHUP", "hup", "SIGRTMIN+2") or number (1); null when it
 * is no signal this host can send (0, which only probes, included).
 */
export function parseSignal(value: unknown): SignalId | null {
  if (typeof value === 'number') {
    const name = signalName(value);
    return name ? { name, number: value } : null;
  }
  if (typeof value !== 'string') return null;
  let name = value.trim().toUpperCase();
  if (!name.startsWith('SIG')) name = `SIG${name}`;
  const rt = /^SIGRTMIN(?:\+(\d{1,2}))?$/.exec(name);
  if (rt) {
    const n = RTMIN + Number(rt[1] ?? 0);
    return n <= RTMAX ? { name: signalName(n)!, number: n } : null;
  }
  const n = numbers[name];
  return n === undefined ? null : { name: names.get(n)!, number: n };
}

/** Whether a process killed by this signal may have dumped core (its default action is "core"). */
export function mayDumpCore(name: string): boolean {
  return CORE_SIGNALS.has(name);
}

/** How a process ended, decoded from a wait(2) status. */
export interface WaitStatus {
  code: number | null;
  signal: string | null;
  signum: number | null;
  coreDump: boolean;
}

/** Decodes a raw wait status the way WIFEXITED/WEXITSTATUS/WTERMSIG/WCOREDUMP do. */
export function decodeWaitStatus(status: number): WaitStatus {
  const sig = status & 0x7f;
  if (sig === 0) return { code: (status >> 8) & 0xff, signal: null, signum: null, coreDump: false };
  return { code: null, signal: signalName(sig) ?? `SIG${sig}`, signum: sig, coreDump: (status & 0x80) !== 0 };
}

/**
 * The names parseSignal accepts, as a regular expression without flags (JSON Schema's kind):
 * any case, with or without "SIG", surrounding blanks allowed, SIGRTMIN+0 to SIGRTMIN+30.
 */
export function signalNamePattern(): string {
  const anyCase = (s: string) => s.replace(/[A-Z]/g, (c) => `[${c}${c.toLowerCase()}]`);
  const bare = Object.keys(numbers)
    .filter((n) => n.startsWith('SIG'))
    .map((n) => anyCase(n.slice(3)));
  const rt = `${anyCase('RTMIN')}(\\+(0?[0-9]|[12][0-9]|30))?`;
  return `^\\s*(${anyCase('SIG')})?(${[...bare, rt].join('|')})\\s*$`;
}

/** The numbers parseSignal accepts. */
export const SIGNAL_NUMBERS = Array.from({ length: RTMAX }, (_v, i) => i + 1).filter((n) => signalName(n) !== null);
