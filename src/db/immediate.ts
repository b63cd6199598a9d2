import type SQLite from 'better-sqlite3';
import { sqliteHandleOf, type DB } from './index.ts';

/**
 * A write transaction on SQLite that waits for the write lock without stopping the event loop.
 *
 * SQLite lets one connection write at a time; a connection that finds the lock taken by another process (the
 * other workers of `npm start`, `npm run seed`, an admin's bulk change) calls its busy handler, which sleeps in
 * the calling thread: 1, 2, 5, 10 ms... With better-sqlite3 that thread is the event loop, so every request in
 * flight on the worker waits too. Measured under load (two workers, 32 connections), the audit batches of one
 * worker found the other's lock taken about 150 times in ten seconds and slept 1-18 ms each time.
 *
 * Here the lock is taken with `BEGIN IMMEDIATE` under a busy timeout of zero: taken at once, or refused at once.
 * Refused, the worker goes on serving and asks again after a pause (a turn of the event loop, then 1, 2, 4 ...
 * ms, at most MAX_PAUSE_MS), for as long as the connection's `busy_timeout` would have waited, then fails with
 * SQLite's own SQLITE_BUSY error, as the blocking wait would have. The lock is never kept across a pause: `work`
 * runs on the connection kysely uses, pinned for it, and the transaction is committed or rolled back before the
 * connection is let go. Elsewhere (PostgreSQL; a kysely instance idjag did not open) it is a plain transaction.
 */
export async function immediateTransaction<T>(db: DB, work: (trx: DB) => Promise<T>, o: { timeoutMs?: number } = {}): Promise<T> {
  const sqlite = sqliteHandleOf(db);
  if (!sqlite) return db.transaction().execute(work);
  let deadline: number | undefined;
  for (let attempt = 0; ; attempt++) {
    const outcome = await db.connection().execute(async (conn) => {
      const busy = beginImmediate(sqlite);
      deadline ??= Date.now() + (o.timeoutMs ?? busy?.waitMs ?? 0);
      if (busy) {
        if (Date.now() >= deadline) throw busy.error;
        return BUSY;
      }
      try {
        const value = await work(conn);
        sqlite.prepare('commit').run();
        return { value };
      } catch (err) {
        // a statement that failed may have ended the transaction already (SQLite rolls back on some errors)
        if (sqlite.inTransaction) sqlite.prepare('rollback').run();
        throw err;
      }
    });
    if (outcome !== BUSY) return outcome.value;
    await pause(attempt);
  }
}

const BUSY = Symbol('busy');

/** Pauses between attempts grow to this: a lock held longer is a bulk change, worth no faster polling. */
export const MAX_PAUSE_MS = 16;

const pause = (attempt: number) => new Promise<void>((resolve) => {
  // A batch of the other worker holds the lock for well under a millisecond: one turn first.
  if (attempt === 0) setImmediate(resolve);
  else setTimeout(resolve, Math.min(2 ** (attempt - 1), MAX_PAUSE_MS));
});

/**
 * BEGIN IMMEDIATE with no wait: undefined once the write lock is held; if another connection holds it, SQLite's
 * SQLITE_BUSY error and how long the connection's busy timeout would have waited. The timeout goes back before
 * anything else can use the connection (all of this is synchronous).
 */
function beginImmediate(sqlite: SQLite.Database): { error: Error; waitMs: number } | undefined {
  const waitMs = (sqlite.prepare('pragma busy_timeout').get() as { timeout: number }).timeout;
  sqlite.prepare('pragma busy_timeout = 0').get();
  try {
    sqlite.prepare('begin immediate').run();
    return undefined;
  } catch (err) {
    if ((err as { code?: unknown }).code === 'SQLITE_BUSY') return { error: err as Error, waitMs };
    throw err;
  } finally {
    sqlite.prepare(`pragma busy_timeout = ${Number(waitMs)}`).get();
  }
}

/**
 * A write of the serving path: on SQLite in an immediateTransaction, so its lock is waited for off the event
 * loop; on PostgreSQL `work(db)` as it is (there a wait is on the network, never on the event loop).
 */
export function writeWithoutBlocking<T>(db: DB, work: (via: DB) => Promise<T>): Promise<T> {
  return sqliteHandleOf(db) ? immediateTransaction(db, work) : work(db);
}
