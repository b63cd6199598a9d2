import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Database, SqliteDatabase } from '../../src/db/index.ts';
import { createPgDatabase, dropPgDatabase } from './pg-admin.ts';

export { maintenance } from './pg-admin.ts';

/**
 * Which database the suite runs on: SQLite files in temp dirs (the default), or, with IDJAG_TEST_DB=postgres,
 * a fresh PostgreSQL database per test server (created through a maintenance connection to IDJAG_TEST_PG_URL
 * and dropped on dispose). `npm test` (test/run.ts) runs the suite once on each.
 */
export const TEST_DB: 'sqlite' | 'postgres' = process.env.IDJAG_TEST_DB === 'postgres' ? 'postgres' : 'sqlite';
export const onPostgres = TEST_DB === 'postgres';

/** For what only exists on SQLite (PRAGMAs, EXPLAIN QUERY PLAN, the file itself): each use says why. */
export const sqliteOnly = onPostgres ? describe.skip : describe;

export interface TestDatabase {
  /** what idjag's `--database` takes: a SQLite file path or a postgres:// URL */
  location: string;
  /** a scratch directory of the test's own (on SQLite the file is in it) */
  dir: string;
  /** the PostgreSQL database's name; undefined on SQLite */
  name: string | undefined;
  /** delete the database (drop it, or the SQLite file) and the scratch directory; idempotent */
  dispose(): Promise<void>;
}

/** A fresh, empty database for one test server (or one test), on the suite's dialect. */
export async function createTestDatabase(label = 'idjag'): Promise<TestDatabase> {
  const dir = mkdtempSync(join(tmpdir(), `${label}-`));
  if (!onPostgres) {
    return {
      location: join(dir, 'idjag.db'),
      dir,
      name: undefined,
      async dispose() {
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  let created: { name: string; url: string };
  try {
    created = await createPgDatabase();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  let disposed = false;
  return {
    location: created.url,
    dir,
    name: created.name,
    async dispose() {
      if (disposed) return;
      disposed = true;
      rmSync(dir, { recursive: true, force: true });
      await dropPgDatabase(created.name);
    },
  };
}

/** The better-sqlite3 handle of a SQLite database, for the tests that reach below kysely. */
export function sqliteHandle(database: Database): SqliteDatabase['sqlite'] {
  if (database.dialect !== 'sqlite') throw new Error(`this test needs SQLite, not ${database.dialect}`);
  return database.sqlite;
}
