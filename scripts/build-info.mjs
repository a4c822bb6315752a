// Records the git commit the package is built from in dist/build-info.json, for
// `drover --version` and the drover_build_info metric. Run by `npm run build` and `prepare`
// (so `npm pack` packs it); outside a git checkout the commit is "unknown".
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const git = (...args) => spawnSync('git', args, { cwd: root, encoding: 'utf8', timeout: 10_000 });
const head = git('rev-parse', '--short=12', 'HEAD');
let commit = head.status === 0 ? head.stdout.trim() : 'unknown';
// A tree with uncommitted changes to tracked files is not exactly that commit: say so.
if (commit !== 'unknown' && git('diff', '--quiet', 'HEAD', '--').status === 1) commit += '-dirty';
if (!/^[0-9a-f]{7,40}(-dirty)?$/.test(commit)) commit = 'unknown';
mkdirSync(new URL('../dist/', import.meta.url), { recursive: true });
writeFileSync(new URL('../dist/build-info.json', import.meta.url), `${JSON.stringify({ commit })}\n`);
