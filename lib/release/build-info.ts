import { readFileSync } from 'node:fs';

export interface BuildInfo {
  /** The git commit the package was built from; "unknown" outside a git checkout. */
  commit: string;
}

let cached: BuildInfo | undefined;

/**
 * What scripts/build-info.mjs recorded when the package was built or packed
 * (dist/build-info.json, next to the compiled lib/): read once.
 */
export function buildInfo(): BuildInfo {
  if (cached) return cached;
  cached = { commit: 'unknown' };
  for (const rel of ['../../dist/build-info.json', '../../build-info.json']) {
    try {
      const info = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { commit?: unknown };
      if (typeof info.commit === 'string' && /^[0-9a-f]{7,40}(-dirty)?$|^unknown$/.test(info.commit))
        return (cached = { commit: info.commit });
    } catch {
      // try the next layout
    }
  }
  return cached;
}
