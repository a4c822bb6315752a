// The architecture rule: each folder of lib/ is one layer, and a module may import only from
// its own layer or a lower one. This list is the one place the order is written down.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve, dirname, sep } from 'node:path';
import t from 'tap';

/** Lowest first. */
export const LAYERS = ['os', 'process', 'release', 'store', 'agent', 'api', 'http', 'cli'] as const;

const lib = resolve(import.meta.dirname, '..', '..', 'lib');

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** Relative specifiers of static imports, re-exports and dynamic imports. */
export function importsOf(source: string): string[] {
  const specs: string[] = [];
  for (const m of source.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^\s*import\s+)(['"])(\.{1,2}\/[^'"]+)\1/gm)) specs.push(m[2]);
  return specs;
}

const layerOf = (file: string) => relative(lib, file).split(sep)[0];
const rank = (layer: string) => (LAYERS as readonly string[]).indexOf(layer);

t.test('importsOf finds static, type-only, side-effect and dynamic imports', async (t) => {
  const src =
    "import a from './a.js';\nimport type { B } from '../b.js';\nimport './c.js';\nexport { d } from '../d/d.js';\nconst e = await import('../e.js');\nimport x from 'node:fs';\n";
  t.same(importsOf(src), ['./a.js', '../b.js', './c.js', '../d/d.js', '../e.js']);
});

t.test('every file of lib/ sits in a known layer', async (t) => {
  const stray = tsFiles(lib)
    .filter((f) => rank(layerOf(f)) < 0)
    .map((f) => relative(lib, f));
  t.same(stray, [], `files outside the layers ${LAYERS.join(', ')}`);
});

t.test('no module imports from a layer above its own', async (t) => {
  const upward: string[] = [];
  for (const file of tsFiles(lib)) {
    const from = layerOf(file);
    for (const spec of importsOf(readFileSync(file, 'utf8'))) {
      const target = resolve(dirname(file), spec);
      const to = layerOf(target);
      if (!relative(lib, target).startsWith('..') && rank(to) > rank(from))
        upward.push(`${relative(lib, file)} -> ${relative(lib, target)} (${from} imports ${to})`);
      if (relative(lib, target).startsWith('..')) upward.push(`${relative(lib, file)} -> ${spec} (outside lib/)`);
    }
  }
  t.same(upward, [], 'upward imports');
});
