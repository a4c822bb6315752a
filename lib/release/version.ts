import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** The package version, read once from package.json next to lib/ (or dist/lib/). */
export function version(): string {
  if (cached !== undefined) return cached;
  cached = 'unknown';
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8'));
      if (pkg.name === 'drover') return (cached = String(pkg.version));
    } catch {
      // try the next layout
    }
  }
  return cached;
}
