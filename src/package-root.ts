import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The folder holding idjag's package.json, `views/` and `seed/`. The sources run from `src/` (npm start, the
 * tests) and the built package from `dist/src/` (npx idjag, or idjag installed as a dependency), so files
 * beside the code are found from the package root, not by counting `..` from one module.
 */
export const PACKAGE_ROOT = packageRootAbove(dirname(fileURLToPath(import.meta.url)));

export const VIEWS_DIR = join(PACKAGE_ROOT, 'views');
export const DEFAULT_SEED_FILE = join(PACKAGE_ROOT, 'seed', 'seed.json');

function packageRootAbove(dir: string): string {
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'views'))) return d;
    if (dirname(d) === d) throw new Error(`idjag's package root (a folder with package.json and views/) is not above ${dir}`);
  }
}
