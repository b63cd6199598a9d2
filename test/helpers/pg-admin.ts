import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * The PostgreSQL side of the test harness, without jest (test/run.ts uses it too): a maintenance connection to
 * IDJAG_TEST_PG_URL, and the test databases created and dropped through it.
 */

export const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/test';
export const pgMaintenanceUrl = (): string => process.env.IDJAG_TEST_PG_URL || DEFAULT_PG_URL;

/**
 * Test databases are named `idjag_t_<epoch seconds>_<run>_<random>`: unique across jest's parallel workers
 * and concurrent runs; a leftover's age is in its name (test/run.ts drops those older than an hour), and its
 * run tag (IDJAG_TEST_RUN, set by test/run.ts) says which run leaked it.
 */
export const TEST_DB_PREFIX = 'idjag_t_';
const TEST_DB_NAME = /^idjag_t_(\d+)_([0-9a-z]+)_[0-9a-f]+$/;
const runTag = (): string => (process.env.IDJAG_TEST_RUN ?? 'x').toLowerCase().replace(/[^0-9a-z]/g, '').slice(0, 12) || 'x';

export function parseTestDatabaseName(name: string, nowSeconds = Math.floor(Date.now() / 1000)): { age: number; run: string } | undefined {
  const m = TEST_DB_NAME.exec(name);
  return m ? { age: nowSeconds - Number(m[1]), run: m[2]! } : undefined;
}

export const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

/** Statements on the maintenance database, on a connection of their own (no pool left open in a jest worker). */
export async function maintenance<T extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values: unknown[] = [], url = pgMaintenanceUrl()): Promise<pg.QueryResult<T>> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, application_name: 'idjag-test-harness' });
  client.on('error', () => {});
  await client.connect();
  try {
    return await client.query<T>(text, values);
  } finally {
    await client.end();
  }
}

export async function createPgDatabase(): Promise<{ name: string; url: string }> {
  const name = `${TEST_DB_PREFIX}${Math.floor(Date.now() / 1000)}_${runTag()}_${randomBytes(6).toString('hex')}`;
  // CREATE DATABASE copies template1 and fails while another session is connected to it: retry briefly.
  for (let attempt = 0; ; attempt++) {
    try {
      await maintenance(`create database ${quoteIdent(name)}`);
      break;
    } catch (err) {
      if (attempt >= 20 || !/being accessed by other users/.test(String(err))) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 200));
    }
  }
  const url = new URL(pgMaintenanceUrl());
  url.pathname = `/${name}`;
  return { name, url: url.toString() };
}

export async function dropPgDatabase(name: string): Promise<void> {
  await maintenance(`drop database if exists ${quoteIdent(name)} with (force)`);
}

/** The test databases that exist now, with their age and run. */
export async function listTestDatabases(): Promise<{ name: string; age: number; run: string }[]> {
  const { rows } = await maintenance<{ datname: string }>("select datname from pg_database where datname like 'idjag\\_t\\_%'");
  return rows.flatMap((r) => {
    const parsed = parseTestDatabaseName(r.datname);
    return parsed ? [{ name: r.datname, ...parsed }] : [];
  });
}
