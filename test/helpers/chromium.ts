/**
 * The one place a browser test gets its browser from, and the one place `npm test` (test/run.ts) asks whether
 * there is one. The first of these that exists is used:
 *
 *   1. IDJAG_CHROMIUM: a chromium (or chrome) executable named explicitly. When it is set and wrong, the
 *      browser tests fail: it was asked for, so falling back to another browser would hide the mistake.
 *   2. /usr/bin/chromium: the system's (Debian's package `chromium`).
 *   3. The headless Chromium shipped inside the npm package @sparticuz/chromium (a devDependency, so
 *      `npm install` brings it; the package tarball itself carries the binary, brotli-compressed, and it has
 *      no install script). It is unpacked on first use into node_modules/.cache/idjag-chromium/<version>/,
 *      with the NSS and expat libraries the package ships beside it, which it is then launched with
 *      (LD_LIBRARY_PATH) so it does not depend on the host's.
 *
 * Nothing is downloaded: no `npx playwright install`, no browser fetched at run time.
 */
import { existsSync, readFileSync, createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createBrotliDecompress } from 'node:zlib';
import { chromium, type Browser, type Page } from 'playwright-core';
import { extract } from 'tar-fs';

export const SYSTEM_CHROMIUM = '/usr/bin/chromium';
const SHIPPED_PACKAGE = '@sparticuz/chromium';
const CACHE = fileURLToPath(new URL('../../node_modules/.cache/idjag-chromium/', import.meta.url));

/** The flags every browser test runs with: headless, and none of chromium's own traffic to the network. */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export type ChromiumSource =
  | { kind: 'explicit'; executable: string }
  | { kind: 'system'; executable: string }
  | { kind: 'npm'; packageDir: string; version: string };

/** Where the browser tests' chromium comes from, or why there is none (the reason `npm test` prints). */
export function locateChromium(env: NodeJS.ProcessEnv = process.env): ChromiumSource | { missing: string } {
  if (env.IDJAG_CHROMIUM) return { kind: 'explicit', executable: env.IDJAG_CHROMIUM };
  if (existsSync(SYSTEM_CHROMIUM)) return { kind: 'system', executable: SYSTEM_CHROMIUM };
  const shipped = shippedPackage();
  if (shipped) return { kind: 'npm', ...shipped };
  return { missing: `no IDJAG_CHROMIUM, no ${SYSTEM_CHROMIUM}, and the npm package ${SHIPPED_PACKAGE} is not installed (run npm install)` };
}

/** One line for a summary: which chromium, from where. */
export function describeChromium(source: ChromiumSource): string {
  switch (source.kind) {
    case 'explicit': return `IDJAG_CHROMIUM=${source.executable}`;
    case 'system': return `the system's ${source.executable}`;
    case 'npm': return `${SHIPPED_PACKAGE} ${source.version} from npm`;
  }
}

/** A headless chromium, found as above, driven by playwright-core. Close it in the test's afterAll. */
export async function launchChromium(): Promise<Browser> {
  const source = locateChromium();
  if ('missing' in source) throw new Error(`no browser for the browser tests: ${source.missing}`);
  if (source.kind === 'explicit' && !existsSync(source.executable)) {
    throw new Error(`IDJAG_CHROMIUM names ${source.executable}, which does not exist`);
  }
  if (source.kind !== 'npm') return chromium.launch({ executablePath: source.executable, args: CHROMIUM_ARGS });
  const unpacked = await unpackShipped(source.packageDir, source.version);
  const libraryPath = [unpacked.libDir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':');
  return chromium.launch({ executablePath: unpacked.executable, args: CHROMIUM_ARGS, env: { ...process.env, LD_LIBRARY_PATH: libraryPath } });
}

function shippedPackage(): { packageDir: string; version: string } | undefined {
  let entry: string;
  try {
    entry = createRequire(import.meta.url).resolve(SHIPPED_PACKAGE);
  } catch {
    return undefined;
  }
  // the package exports only its entry point (build/index.js), not its package.json
  const packageDir = join(dirname(entry), '..');
  if (!existsSync(join(packageDir, 'bin', 'chromium.br'))) return undefined;
  const { version } = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as { version: string };
  return { packageDir, version };
}

/**
 * Unpacks the shipped binary and its libraries once per version. Several jest workers may get here at the
 * same time: each unpacks into a staging directory of its own and renames it into place, so a directory
 * that exists under its final name is always complete; the loser of the race discards its copy.
 */
async function unpackShipped(packageDir: string, version: string): Promise<{ executable: string; libDir: string }> {
  const target = join(CACHE, version);
  const unpacked = { executable: join(target, 'chromium'), libDir: join(target, 'lib') };
  if (existsSync(unpacked.executable)) return unpacked;
  await mkdir(CACHE, { recursive: true });
  const staging = await mkdtemp(join(CACHE, `.${version}-`));
  try {
    await pipeline(createReadStream(join(packageDir, 'bin', 'chromium.br')), createBrotliDecompress(), createWriteStream(join(staging, 'chromium'), { mode: 0o755 }));
    // lib/: libnss3, libnspr4, libexpat and friends, the versions the binary was built with
    await pipeline(createReadStream(join(packageDir, 'bin', 'al2023.tar.br')), createBrotliDecompress(), extract(staging));
    await rename(staging, target).catch((err: unknown) => {
      if (!existsSync(unpacked.executable)) throw err;
    });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return unpacked;
}

/**
 * Collects what a browser test must end without: console errors and uncaught page errors (a CSP violation is a
 * console error). A page answered with an error status (a refused form) is the page under test, not a problem.
 */
export function watchProblems(p: Page, problems: string[]): Page {
  p.on('console', (m) => {
    const documentStatus = m.text().startsWith('Failed to load resource') && m.location().url === p.url();
    if (m.type() === 'error' && !documentStatus) problems.push(`${p.url()}: ${m.text()}`);
  });
  p.on('pageerror', (e) => problems.push(`${p.url()}: ${e.message}`));
  return p;
}
