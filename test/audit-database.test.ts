import { existsSync } from 'node:fs';
import { decodeJwt } from 'jose';
import { Migrator } from 'kysely/migration';
import { migrations } from '../migrations/index.ts';
import { AUDIT_TABLES } from '../migrations/0013_audit_database.ts';
import { AUDIT_SCHEMA, auditFileOf, migrateToLatest, openDatabase, type SqliteDatabase } from '../src/db/index.ts';
import { signIn } from './helpers/browser.ts';
import { createTestDatabase, sqliteOnly, type TestDatabase } from './helpers/database.ts';
import { exchange } from './helpers/exchange.ts';
import { startTestServer } from './helpers/server.ts';

/**
 * On SQLite the tables every request writes (the audit log, the sign-in log, the DPoP proofs seen) live in a
 * second file beside the main one, so that these writes leave the other workers' caches of the main file
 * (users, clients, rules) valid. Migration 0013 moves them, rows and indexes, and back.
 */

test('the audit database sits beside the main file', () => {
  expect(auditFileOf('data/idjag.db')).toBe('data/idjag.audit.db');
  expect(auditFileOf('/var/lib/idjag/store.sqlite3')).toBe('/var/lib/idjag/store.audit.sqlite3');
  expect(auditFileOf('/srv/idjag')).toBe('/srv/idjag.audit');
  expect(auditFileOf('./data.d/idjag')).toBe('./data.d/idjag.audit');
  expect(auditFileOf(':memory:')).toBe(':memory:');
});

sqliteOnly('the audit database (SQLite)', () => {
  let scratch: TestDatabase;
  beforeEach(async () => {
    scratch = await createTestDatabase('idjag-audit-db');
  });
  afterEach(() => scratch.dispose());

  const tablesIn = (s: SqliteDatabase['sqlite'], schema: string) =>
    (s.prepare(`select name from ${schema}.sqlite_master where type = 'table' order by name`).all() as { name: string }[]).map((r) => r.name);
  const indexesIn = (s: SqliteDatabase['sqlite'], schema: string) =>
    (s.prepare(`select name from ${schema}.sqlite_master where type = 'index' and sql is not null order by name`).all() as { name: string }[]).map((r) => r.name);
  const migrator = (database: SqliteDatabase) => new Migrator({ db: database.db, provider: { getMigrations: async () => migrations } });
  const open = () => {
    const database = openDatabase(scratch.location);
    if (database.dialect !== 'sqlite') throw new Error('SQLite expected');
    return database;
  };

  /** A database at the migration before the move, with a row in each table that moves. */
  async function before(database: SqliteDatabase): Promise<void> {
    const { error } = await migrator(database).migrateTo('0012_audit_slim_indexes');
    if (error) throw error;
    const s = database.sqlite;
    s.prepare("insert into audit_log (id, at, request_id, decision, reason, explanation, client_id, sub, checks) values ('row-1', 1700000000000, 'req-1', 'issued', 'issued', '=300', 'demo-agent', 'alice-sub', '0-10')").run();
    s.prepare("insert into login_events (id, at, request_id, event, username) values ('login-1', 1700000000000, 'req-2', 'succeeded', 'alice')").run();
    s.prepare("insert into dpop_proofs (id, expires_at) values ('proof-1', 1700000300)").run();
  }

  const rowsOf = (s: SqliteDatabase['sqlite'], schema: string) => Object.fromEntries(AUDIT_TABLES.map((t) => [t, s.prepare(`select * from ${schema}.${t}`).all()]));

  test('a fresh database has the three tables in the audit file, their indexes with them, and none in the main file', async () => {
    const database = open();
    try {
      await migrateToLatest(database.db);
      expect(existsSync(auditFileOf(scratch.location))).toBe(true);
      expect(tablesIn(database.sqlite, AUDIT_SCHEMA)).toEqual([...AUDIT_TABLES, 'audit_values'].sort());
      expect(tablesIn(database.sqlite, 'main')).not.toEqual(expect.arrayContaining(['audit_log']));
      for (const t of AUDIT_TABLES) expect(tablesIn(database.sqlite, 'main')).not.toContain(t);
      expect(indexesIn(database.sqlite, AUDIT_SCHEMA)).toEqual(expect.arrayContaining(['audit_by_time', 'audit_by_sub', 'audit_by_decision', 'login_events_by_time', 'dpop_proofs_by_expiry']));
      expect(indexesIn(database.sqlite, 'main').filter((i) => /^(audit_|login_events_|dpop_proofs_)/.test(i))).toEqual([]);
      // the partial indexes keep their conditions
      const decision = database.sqlite.prepare(`select sql from ${AUDIT_SCHEMA}.sqlite_master where name = 'audit_by_decision'`).get() as { sql: string };
      expect(decision.sql).toMatch(/where "decision" <> 'issued'/);
      // the queries, unqualified, find them
      expect(await database.db.selectFrom('audit_log').select('id').execute()).toEqual([]);
    } finally {
      await database.close();
    }
  });

  test('an existing database: the rows and indexes move to the audit file, and back down', async () => {
    const database = open();
    try {
      await before(database);
      const was = rowsOf(database.sqlite, 'main');
      const indexes = indexesIn(database.sqlite, 'main').filter((i) => /^(audit_|login_events_|dpop_proofs_)/.test(i));
      expect(indexes.length).toBeGreaterThan(5);

      expect((await migrateToLatest(database.db)).applied).toEqual(['0013_audit_database', '0014_audit_values', '0015_change_counters']);
      expect(rowsOf(database.sqlite, AUDIT_SCHEMA)).toEqual(was);
      expect(indexesIn(database.sqlite, AUDIT_SCHEMA)).toEqual(indexes);
      for (const t of AUDIT_TABLES) expect(tablesIn(database.sqlite, 'main')).not.toContain(t);

      const { error } = await migrator(database).migrateTo('0012_audit_slim_indexes');
      expect(error).toBeUndefined();
      expect(rowsOf(database.sqlite, 'main')).toEqual(was);
      expect(indexesIn(database.sqlite, 'main').filter((i) => /^(audit_|login_events_|dpop_proofs_)/.test(i))).toEqual(indexes);
      expect(tablesIn(database.sqlite, AUDIT_SCHEMA)).toEqual([]);
    } finally {
      await database.close();
    }
  });

  test('a move interrupted between its copy and its drop is finished by the next run, copying again', async () => {
    const database = open();
    try {
      await before(database);
      const was = rowsOf(database.sqlite, 'main');
      // the copy of one table committed, with a row more than the original (as if written by a partial run)
      database.sqlite.exec(`create table ${AUDIT_SCHEMA}.audit_log as select * from main.audit_log`);
      database.sqlite.exec(`insert into ${AUDIT_SCHEMA}.audit_log (id, at, request_id, decision, reason, explanation, checks) values ('stray', 1, 'r', 'error', 'x', '', '[]')`);

      expect((await migrateToLatest(database.db)).applied).toEqual(['0013_audit_database', '0014_audit_values', '0015_change_counters']);
      expect(rowsOf(database.sqlite, AUDIT_SCHEMA)).toEqual(was);
      expect(indexesIn(database.sqlite, AUDIT_SCHEMA)).toEqual(expect.arrayContaining(['audit_by_time', 'audit_by_sub', 'login_events_by_time', 'dpop_proofs_by_expiry']));
      for (const t of AUDIT_TABLES) expect(tablesIn(database.sqlite, 'main')).not.toContain(t);
    } finally {
      await database.close();
    }
  });

  test('a served exchange writes its audit row to the audit file and nothing to the main file', async () => {
    // token limits off: their counts reach the main file once a second, which is not what this test watches
    const idjag = await startTestServer({ tokenRateLimit: 0, tokenUserRateLimit: 0 }, scratch);
    const observer = open();
    try {
      const alice = await signIn(idjag.url);
      // data_version changes when another connection commits to that file
      const version = (schema: string) => observer.sqlite.pragma(`${schema}.data_version`, { simple: true });
      const [mainBefore, auditBefore] = [version('main'), version(AUDIT_SCHEMA)];
      const res = await exchange(idjag.url, alice.tokens.id_token);
      expect(res.status).toBe(200);
      const { jti } = decodeJwt(res.body.access_token);
      // the row's id is the ID-JAG's jti (src/audit/codec.ts, encodeOwnId)
      expect(observer.sqlite.prepare(`select decision from ${AUDIT_SCHEMA}.audit_log where id = ?`).get(jti)).toEqual({ decision: 'issued' });
      expect(version(AUDIT_SCHEMA)).not.toBe(auditBefore);
      expect(version('main')).toBe(mainBefore);
    } finally {
      await observer.close();
      await idjag.stop();
    }
  });
});
