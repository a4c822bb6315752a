// A process's event log entries in words: each becomes a kind ("exited", "restart", "ready",
// ...) and a detail, the way `drover logs` writes its markers, with exits, restarts and errors
// marked so the list can highlight them.
import { bytes, seconds } from './format.js';

/** "exited with code 1 after 0.2 s", "killed by SIGKILL after 3 s", "could not start: …". */
export function exitText(ev) {
  const how = ev.error ? `could not start: ${ev.error}` : ev.signal ? `killed by ${ev.signal}` : `exited with code ${ev.exit_code}`;
  return typeof ev.duration === 'number' ? `${how} after ${seconds(ev.duration)}` : how;
}

/** Whether an exit is a failure: a non-zero code, a signal or a start that failed. */
export function isFailure(ev) {
  return Boolean(ev.error) || Boolean(ev.signal) || (ev.exit_code !== 0 && ev.exit_code !== undefined);
}

const short = (sha) => (typeof sha === 'string' ? sha.slice(0, 12) : '');

/** { kind, detail, mark }: mark is 'exit', 'restart', 'error', 'ready' or '' (nothing to highlight). */
export function describeEvent(ev) {
  switch (ev.type) {
    case 'state':
      return {
        kind: ev.from === null || ev.from === undefined ? 'created' : 'state',
        detail: `${ev.from ?? '∅'} → ${ev.to}${ev.why ? `: ${ev.why}` : ''}`,
        mark: '',
      };
    case 'child_started':
      return { kind: 'started', detail: `pid ${ev.pid}${ev.port ? `, port ${ev.port}` : ''}`, mark: '' };
    case 'child_exited':
      return { kind: 'exited', detail: exitText(ev), mark: isFailure(ev) ? 'exit' : 'exit-ok' };
    case 'restart_scheduled':
      return { kind: 'restart', detail: `in ${seconds(Number(ev.delay_ms) / 1000)} (restart ${ev.restarts})`, mark: 'restart' };
    case 'error':
      return { kind: 'error', detail: String(ev.message), mark: 'error' };
    case 'ready':
      return {
        kind: 'ready',
        detail: `accepts connections on port ${ev.port} after ${seconds(Number(ev.after_ms) / 1000)}`,
        mark: 'ready',
      };
    case 'download':
      return {
        kind: 'download',
        detail: typeof ev.total === 'number' ? `${bytes(ev.bytes)} of ${bytes(ev.total)}` : `${bytes(ev.bytes)}`,
        mark: '',
      };
    case 'build_started':
      return {
        kind: 'build',
        detail: `started${ev.sha256 ? ` (release ${short(ev.sha256)})` : ''}${ev.forced ? ', forced' : ''}`,
        mark: '',
      };
    case 'build_finished':
      return ev.error ? { kind: 'build', detail: `failed: ${ev.error}`, mark: 'error' } : { kind: 'build', detail: 'finished', mark: '' };
    case 'replace_started':
      return {
        kind: 'replace',
        detail: `${ev.strategy}${Array.isArray(ev.changed) && ev.changed.length ? `: ${ev.changed.join(', ')}` : ''}; building`,
        mark: 'restart',
      };
    case 'replaced':
      return {
        kind: 'replaced',
        detail: `${ev.strategy}${ev.from_port !== ev.to_port ? `, port ${ev.from_port} → ${ev.to_port}` : ''}${typeof ev.down_ms === 'number' ? `, ${seconds(ev.down_ms / 1000)} without service` : ''}`,
        mark: 'restart',
      };
    case 'replace_failed':
      return { kind: 'replace', detail: `failed: ${ev.error}`, mark: 'error' };
    case 'port_changed':
      return { kind: 'port', detail: `${ev.from} → ${ev.to}`, mark: '' };
    default: {
      const { id: _id, time: _time, type, ...rest } = ev;
      const detail = Object.entries(rest)
        .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`)
        .join(', ');
      return { kind: String(type ?? 'event').replaceAll('_', ' '), detail, mark: '' };
    }
  }
}
