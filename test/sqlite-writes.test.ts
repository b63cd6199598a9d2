/**
 * How a SQLite worker writes without stopping its event loop (src/db/immediate.ts, src/db/checkpointer.ts):
 * the audit batch's write lock is waited for between turns of the loop, not in a sleep inside SQLite; WAL
 * checkpoints run on a thread of their own. Real files in a temp dir, a second connection standing in for
 * another worker.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import SQLite from 'better-sqlite3';
import { sql } from 'kysely';
import { recordOutcome, type DecisionRecord } from '../src/audit/index.ts';
import { BACKSTOP_PAGES, INTERVAL_MS, startCheckpointer } from '../src/db/checkpointer.ts';
import { immediateTransaction } from '../src/db/immediate.ts';
import { auditFileOf, BUSY_TIMEOUT_MS, migrateToLatest, openDatabase, type SqliteDatabase } from '../src/db/index.ts';
import { sqliteOnly } from './helpers/database.ts';

const require = createRequire(import.meta.url);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let dir: string;
let database: SqliteDatabase;
/** another process's connection to the audit file */
let other: SQLite.Database;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'idjag-sqlite-writes-'));
  database = openDatabase(join(dir, 'idjag.db')) as SqliteDatabase;
  await migrateToLatest(database.db);
  other = new SQLite(auditFileOf(database.location));
});

afterEach(async () => {
  other.close();
  await database.close();
  rmSync(dir, { recursive: true, force: true });
});

const auditRows = () => (database.sqlite.prepare('select count(*) as n from audit_log').get() as { n: number }).n;
const busyTimeout = () => database.sqlite.pragma('busy_timeout', { simple: true });

const decision = (i: number): DecisionRecord => ({
  requestId: `request-${i}`, decision: 'denied', reason: 'policy_denied', explanation: 'no rule', clientId: `client-${i}`, checks: [],
});

sqliteOnly('the write lock, waited for without stopping the event loop', () => {
  test('while another connection holds the lock the worker goes on running; the rows land once it is released', async () => {
    other.prepare('begin immediate').run();
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    const written = recordOutcome(database.db, decision(1));
    let done = false;
    void written.then(() => (done = true));
    await sleep(120);
    // the event loop ran all along (a wait inside SQLite would have stopped the timer), and nothing is written
    expect(ticks).toBeGreaterThanOrEqual(10);
    expect(done).toBe(false);
    expect(auditRows()).toBe(0);
    // the timeout in force for every other statement is the usual one while it waits
    expect(busyTimeout()).toBe(BUSY_TIMEOUT_MS);
    other.prepare('commit').run();
    await written;
    clearInterval(ticker);
    expect(auditRows()).toBe(1);
    expect(busyTimeout()).toBe(BUSY_TIMEOUT_MS);
  });

  test('a lock held past the timeout fails with SQLite\'s own SQLITE_BUSY, and writes nothing', async () => {
    other.prepare('begin immediate').run();
    const started = Date.now();
    const failed = immediateTransaction(database.db, async (trx) => {
      await sql`insert into audit_values (value) values ('x')`.execute(trx);
    }, { timeoutMs: 150 });
    await expect(failed).rejects.toMatchObject({ code: 'SQLITE_BUSY' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    other.prepare('rollback').run();
    expect(database.sqlite.prepare('select count(*) as n from audit_values').get()).toEqual({ n: 0 });
    expect(database.sqlite.inTransaction).toBe(false);
    expect(busyTimeout()).toBe(BUSY_TIMEOUT_MS);
  });

  test('work that throws is rolled back and lets the lock go', async () => {
    await expect(immediateTransaction(database.db, async (trx) => {
      await sql`insert into audit_values (value) values ('y')`.execute(trx);
      throw new Error('refused');
    })).rejects.toThrow('refused');
    expect(database.sqlite.inTransaction).toBe(false);
    expect(database.sqlite.prepare('select count(*) as n from audit_values').get()).toEqual({ n: 0 });
    // the other connection can write at once
    other.pragma('busy_timeout = 0');
    other.prepare("insert into audit_values (value) values ('z')").run();
  });

  test('the other queries of the worker run while a batch waits for the lock', async () => {
    other.prepare('begin immediate').run();
    const written = recordOutcome(database.db, decision(2));
    await sleep(30);
    // a read through kysely is not queued behind the waiting batch
    const read = await Promise.race([database.db.selectFrom('users').select('sub').execute().then(() => 'read'), sleep(1000).then(() => 'stuck')]);
    expect(read).toBe('read');
    other.prepare('commit').run();
    await written;
    expect(auditRows()).toBe(1);
  });
});

sqliteOnly('WAL checkpoints on their own thread', () => {
  const pages = () => statSync(database.location).size / 4096;

  test('the serving connection only checkpoints as a backstop; the thread copies the WAL into the file', async () => {
    expect(database.sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(BACKSTOP_PAGES);
    database.sqlite.exec('create table scratch (x text)');
    const before = pages();
    const insert = database.sqlite.prepare('insert into scratch (x) values (?)');
    // about 500 pages: far below the backstop, so only the thread can have put them in the file
    for (let i = 0; i < 500; i++) insert.run('x'.repeat(4000));
    expect(pages()).toBeLessThan(before + 100);
    const deadline = Date.now() + 20 * INTERVAL_MS;
    while (pages() < before + 500 && Date.now() < deadline) await sleep(INTERVAL_MS / 4);
    expect(pages()).toBeGreaterThanOrEqual(before + 500);
  });

  test('under steady writes, the WAL starts over once it holds RESTART_PAGES (it grows without end otherwise)', async () => {
    // A thread that commits batch after batch (another worker under load), for a second and a half.
    const writeFlat = async (file: string): Promise<{ walPages: number; written: number }> => {
      const writer = new Worker(`
        const { workerData, parentPort } = require('node:worker_threads');
        const SQLite = require(workerData.module);
        const db = new SQLite(workerData.file);
        db.pragma('busy_timeout = 5000');
        // as a serving connection does, leaving checkpoints to the thread
        db.pragma('wal_autocheckpoint = 0');
        const insert = db.prepare('insert into scratch (x) values (?)');
        const batch = db.transaction(() => { for (let i = 0; i < 5; i++) insert.run('x'.repeat(3000)); });
        const pause = new Int32Array(new SharedArrayBuffer(4));
        const until = Date.now() + 1500;
        let written = 0;
        // a batch, then a millisecond to itself: a worker's audit commits come so
        while (Date.now() < until) { batch(); written += 5; Atomics.wait(pause, 0, 0, 1); }
        db.close();
        parentPort.postMessage(written);
      `, { eval: true, workerData: { file, module: require.resolve('better-sqlite3') } });
      const written = await new Promise<number>((resolve, reject) => writer.once('message', resolve).once('error', reject));
      return { walPages: statSync(`${file}-wal`).size / 4096, written };
    };
    const runWith = async (name: string, restartPages: number) => {
      const file = join(dir, `${name}.db`);
      const sqlite = new SQLite(file);
      sqlite.pragma('journal_mode = WAL');
      sqlite.exec('create table scratch (x text)');
      const checkpointer = startCheckpointer(sqlite, [{ schema: 'main', path: file }], { intervalMs: 50, restartPages });
      try {
        return await writeFlat(file);
      } finally {
        await checkpointer.stop();
        sqlite.close();
      }
    };
    const restarting = await runWith('restarting', 200);
    const passiveOnly = await runWith('passive-only', Number.MAX_SAFE_INTEGER);
    // each row takes about a page: thousands of pages were written each time
    expect(restarting.written).toBeGreaterThan(1500);
    expect(passiveOnly.written).toBeGreaterThan(1500);
    expect(passiveOnly.walPages).toBeGreaterThan(Math.min(passiveOnly.written, restarting.written) / 2);
    expect(restarting.walPages).toBeLessThan(Math.min(passiveOnly.written, restarting.written) / 4);
  });

  test('a thread that cannot run gives the connection its own checkpoints back', async () => {
    const sqlite = new SQLite(join(dir, 'alone.db'));
    sqlite.pragma('journal_mode = WAL');
    const checkpointer = startCheckpointer(sqlite, [{ schema: 'main', path: join(dir, 'no-such-dir', 'x.db') }]);
    expect(sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(BACKSTOP_PAGES);
    const deadline = Date.now() + 5000;
    while (sqlite.pragma('wal_autocheckpoint', { simple: true }) !== 1000 && Date.now() < deadline) await sleep(20);
    expect(sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(1000);
    await checkpointer.stop();
    sqlite.close();
  });
});
