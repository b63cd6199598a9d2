/**
 * `npm test`: the whole jest suite on SQLite, then the same suite on PostgreSQL when one is reachable at
 * IDJAG_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test; every test server gets a database of
 * its own there, created and dropped by test/helpers/database.ts). Arguments go to jest, both times.
 *
 *   IDJAG_TEST_DB=sqlite | postgres   run one suite only (postgres: an unreachable server is a failure)
 *   IDJAG_TEST_PG_REQUIRED=1          an unreachable PostgreSQL fails the run instead of being reported (CI)
 *   IDJAG_TEST_BROWSER_REQUIRED=1     no browser for the browser tests fails the run instead of being reported (CI)
 *   IDJAG_CHROMIUM=/path/to/chromium  the browser the browser tests drive (see test/helpers/chromium.ts)
 *
 * Without a reachable PostgreSQL the SQLite suite decides the exit code, and the summary says plainly that
 * the PostgreSQL suite was NOT run, and why. The same goes for the browser tests when no chromium can be found
 * at all (they skip themselves then): the summary names the browser they drove, or why they were NOT run.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { describeChromium, locateChromium } from './helpers/chromium.ts';
import { dropPgDatabase, listTestDatabases, maintenance, pgMaintenanceUrl } from './helpers/pg-admin.ts';

type Dialect = 'sqlite' | 'postgres';
interface Outcome { dialect: Dialect; code: number; seconds: number }

const LEFTOVER_AGE_S = 3600;
const NAMES: Record<Dialect, string> = { sqlite: 'SQLite', postgres: 'PostgreSQL' };

const jestBin = createRequire(import.meta.url).resolve('jest/bin/jest');
const jestArgs = process.argv.slice(2);
const only = process.env.IDJAG_TEST_DB;
const required = process.env.IDJAG_TEST_PG_REQUIRED === '1' || only === 'postgres';
const browserRequired = process.env.IDJAG_TEST_BROWSER_REQUIRED === '1';
// names this run's PostgreSQL databases, so what it leaks can be found (and dropped) at its end
const run = randomBytes(4).toString('hex');

const redact = (url: string): string => {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(not a URL)';
  }
};

function banner(text: string) {
  console.log(`\n${'='.repeat(100)}\n${text}\n${'='.repeat(100)}\n`);
}

function jest(dialect: Dialect): Promise<Outcome> {
  banner(`idjag test suite on ${NAMES[dialect]}${dialect === 'postgres' ? ` (${redact(pgMaintenanceUrl())}, a fresh database per test server)` : ' (temp files)'}`);
  const started = performance.now();
  const child = spawn(process.execPath, [jestBin, ...jestArgs], {
    stdio: 'inherit',
    env: {
      ...process.env,
      NODE_OPTIONS: '--experimental-vm-modules --disable-warning=ExperimentalWarning',
      IDJAG_TEST_DB: dialect,
      IDJAG_TEST_RUN: run,
    },
  });
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ dialect, code: code ?? (signal ? 1 : 0), seconds: (performance.now() - started) / 1000 }));
  });
}

/** Connects with a short timeout, and checks the role may create the per-test databases. Resolves to why not, or undefined. */
async function pgUnavailable(): Promise<string | undefined> {
  try {
    const { rows } = await maintenance<{ can: boolean }>('select (rolcreatedb or rolsuper) as can from pg_roles where rolname = current_user');
    if (!rows[0]?.can) return `the role in ${redact(pgMaintenanceUrl())} may not create databases`;
    return undefined;
  } catch (err) {
    return `cannot connect to ${redact(pgMaintenanceUrl())}: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/** Drops test databases older than an hour (runs that crashed), or every one of `ofRun`. Returns their names. */
async function dropLeftovers(ofRun?: string): Promise<string[]> {
  const leftovers = (await listTestDatabases()).filter((d) => (ofRun ? d.run === ofRun : d.age > LEFTOVER_AGE_S));
  for (const d of leftovers) await dropPgDatabase(d.name);
  return leftovers.map((d) => d.name);
}

async function main(): Promise<number> {
  const outcomes: Outcome[] = [];
  const notes: string[] = [];
  let pgNotRun: string | undefined;

  if (only !== 'postgres') outcomes.push(await jest('sqlite'));

  if (only !== 'sqlite') {
    pgNotRun = await pgUnavailable();
    if (!pgNotRun) {
      const old = await dropLeftovers();
      if (old.length) notes.push(`dropped ${old.length} test database(s) left over from earlier runs: ${old.join(', ')}`);
      outcomes.push(await jest('postgres'));
      const leaked = await dropLeftovers(run).catch((err: unknown) => [`(could not check: ${String(err)})`]);
      if (leaked.length) notes.push(`the PostgreSQL suite left ${leaked.length} database(s) behind (a test that did not dispose its server); dropped: ${leaked.join(', ')}`);
    }
  } else {
    pgNotRun = 'IDJAG_TEST_DB=sqlite';
  }

  const lines = outcomes.map((o) => `  ${`${NAMES[o.dialect]} suite:`.padEnd(19)}${o.code === 0 ? 'passed' : `FAILED (exit ${o.code})`} in ${o.seconds.toFixed(0)} s`);
  if (pgNotRun) lines.push(`  PostgreSQL suite NOT run: ${pgNotRun}${required && only !== 'sqlite' ? ' (required: failing the run)' : ''}`);
  // the browser test files skip themselves on the same answer (test/helpers/chromium.ts)
  const browser = locateChromium();
  if ('missing' in browser) lines.push(`  Browser tests NOT run: ${browser.missing}${browserRequired ? ' (required: failing the run)' : ''}`);
  else lines.push(`  ${'Browser tests:'.padEnd(19)}chromium: ${describeChromium(browser)}`);
  banner(['idjag test summary', ...lines, ...notes.map((n) => `  note: ${n}`)].join('\n'));

  if (outcomes.some((o) => o.code !== 0)) return 1;
  if (pgNotRun && required && only !== 'sqlite') return 1;
  if ('missing' in browser && browserRequired) return 1;
  return 0;
}

main().then((code) => process.exit(code), (err: unknown) => {
  console.error('test runner failed:', err);
  process.exit(1);
});
