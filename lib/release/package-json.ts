// What drover reads of an app's package.json: its scripts. A build step runs only when the
// script exists (no "npm run build" banner for an app without one), and an app without a
// Procfile but with a start script runs `web: npm start`, as on Heroku.
import { join } from 'node:path';
import { readSmallFile } from './small-file.js';

const PACKAGE_JSON_MAX_BYTES = 1024 * 1024;

/** The `scripts` of a package.json's bytes; {} when there are none or it is not JSON. */
export function packageScripts(text: Buffer | string | null): Record<string, unknown> {
  if (text === null) return {};
  try {
    const scripts = (JSON.parse(text.toString()) as { scripts?: unknown } | null)?.scripts;
    return scripts && typeof scripts === 'object' && !Array.isArray(scripts) ? (scripts as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** DIR/package.json's scripts, read as the agent reads an app's files (no symlinks, size-capped). */
export async function readPackageScripts(dir: string): Promise<Record<string, unknown>> {
  return packageScripts(await readSmallFile(join(dir, 'package.json'), PACKAGE_JSON_MAX_BYTES, 'package.json'));
}

/** Whether a script is there to run: a non-empty string. */
export const hasScript = (scripts: Record<string, unknown>, name: string) =>
  typeof scripts[name] === 'string' && (scripts[name] as string).trim() !== '';

/** Whether DIR/package.json has a `start` script. */
export async function hasStartScript(dir: string): Promise<boolean> {
  return hasScript(await readPackageScripts(dir), 'start');
}
