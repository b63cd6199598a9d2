/**
 * The audit log's group commit (src/audit/index.ts): rows of concurrent decisions share a commit, each write
 * resolves only once its row is committed, a row the database refuses fails only its own write, and a batch
 * never joins a transaction someone else has open (its rollback must not take audit rows with it).
 */
import { sql } from 'kysely';
import { recordOutcome, type DecisionRecord } from '../src/audit/index.ts';
import { AUDIT_SCHEMA, migrateToLatest, openDatabase, type Database } from '../src/db/index.ts';
import { createTestDatabase, onPostgres, type TestDatabase } from './helpers/database.ts';

let scratch: TestDatabase;
let database: Database;

beforeAll(async () => {
  scratch = await createTestDatabase('group-commit');
  database = openDatabase(scratch.location);
  await migrateToLatest(database.db);
  // the database refuses one kind of row, as it might refuse any (a constraint, a full disk for one page ...)
  if (onPostgres) {
    await sql`create function refuse_audit_row() returns trigger language plpgsql as $$ begin raise exception 'refused'; end $$`.execute(database.db);
    await sql`create trigger refuse_audit_row before insert on audit_log for each row when (new.client_id = 'refused') execute function refuse_audit_row()`.execute(database.db);
  } else {
    // in the file the table is in (src/db: the audit database)
    await sql`create trigger ${sql.raw(AUDIT_SCHEMA)}.refuse_audit_row before insert on audit_log when new.client_id = 'refused' begin select raise(abort, 'refused'); end`.execute(database.db);
  }
});

afterAll(async () => {
  await database.close();
  await scratch.dispose();
});

const decision = (clientId: string, i: number): DecisionRecord => ({
  requestId: `req-${clientId}-${i}`, decision: 'denied', reason: 'no_rule', explanation: `decision ${i}`, error: 'invalid_target', clientId,
  checks: [{ name: 'policy', status: 'failed', message: 'no rule' }],
});

const count = async (clientId: string) => Number((await database.db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n'))
  .where('client_id', '=', clientId).executeTakeFirstOrThrow()).n);

test('concurrent writes all resolve, each with its row committed', async () => {
  const ids = await Promise.all(Array.from({ length: 250 }, (_, i) => recordOutcome(database.db, decision('many', i))));
  expect(new Set(ids).size).toBe(250);
  expect(await count('many')).toBe(250);
});

test('a row the database refuses fails its own write only; the others of its batch are committed', async () => {
  const writes = Array.from({ length: 20 }, (_, i) => recordOutcome(database.db, decision(i === 7 ? 'refused' : 'batch', i)));
  const settled = await Promise.allSettled(writes);
  expect(settled.map((s) => s.status)).toEqual(settled.map((_, i) => (i === 7 ? 'rejected' : 'fulfilled')));
  expect(String((settled[7] as PromiseRejectedResult).reason)).toMatch(/refused/);
  expect(await count('batch')).toBe(19);
  expect(await count('refused')).toBe(0);
});

test('a batch never joins a transaction someone else has open: that one\'s rollback leaves the audit row', async () => {
  let written: Promise<string> | undefined;
  await expect(database.db.transaction().execute(async (trx) => {
    await trx.insertInto('settings').values({ key: 'group-commit-test', value: 'x' }).execute();
    written = recordOutcome(database.db, decision('outside', 0));
    // give the audit write every chance to run inside this transaction, then roll it back
    await new Promise((resolve) => setTimeout(resolve, 50));
    throw new Error('rolled back');
  })).rejects.toThrow('rolled back');
  await written;
  expect(await count('outside')).toBe(1);
  expect(await database.db.selectFrom('settings').select('key').where('key', '=', 'group-commit-test').execute()).toEqual([]);
});
