import { sql } from 'kysely';
import { writeWithoutBlocking } from '../db/immediate.ts';
import type { DB } from '../db/index.ts';

/**
 * Counters for the hot limits (token requests, failed client authentications), counted in memory and
 * reconciled through the database instead of written to it on every request.
 *
 * Each key has a window that starts at its first hit and lasts `duration` seconds. A node counts its own hits
 * at once (so one node alone is exact) and, every `syncMs`, adds what it counted since its last sync to the
 * key's row in `rate_limits` in one statement for all its keys, reading back the total every node has added:
 * the first node to write a window's row sets when it ends, and the others adopt it.
 *
 * The bound across nodes: a node learns of the others' hits on a key at its next sync, so a key may go over
 * its limit by at most what the other nodes admitted for it within one sync interval. A database that cannot
 * be reached leaves each node counting alone (a log line per failed sync), never refusing for that reason.
 */

export interface WindowOptions {
  /** `rate_limits` keys are `<prefix>:<key>` */
  prefix: string;
  limit: number;
  /** seconds */
  duration: number;
}

export interface WindowCount {
  /** hits in the key's current window, this one included when it was counted */
  count: number;
  /** ms until the window ends */
  msLeft: number;
}

interface Entry {
  /** epoch ms; the window ends then */
  expire: number;
  /** the total the database last reported (every node's synced hits, this node's included) */
  shared: number;
  /** this node's hits not yet synced */
  pending: number;
}

export class SharedWindow {
  readonly prefix: string;
  readonly limit: number;
  readonly #durationMs: number;
  readonly #entries = new Map<string, Entry>();

  constructor(o: WindowOptions) {
    this.prefix = o.prefix;
    this.limit = o.limit;
    this.#durationMs = o.duration * 1000;
  }

  #entry(key: string, now: number): Entry {
    let e = this.#entries.get(key);
    if (!e || e.expire <= now) {
      e = { expire: now + this.#durationMs, shared: 0, pending: 0 };
      this.#entries.set(key, e);
    }
    return e;
  }

  /** What the key's window holds now, without counting. */
  peek(key: string, now = Date.now()): WindowCount {
    const e = this.#entries.get(key);
    if (!e || e.expire <= now) return { count: 0, msLeft: this.#durationMs };
    return { count: e.shared + e.pending, msLeft: e.expire - now };
  }

  /** Counts a hit unless the window is full already; `allowed` says which. A refused hit is not counted. */
  take(key: string, now = Date.now()): WindowCount & { allowed: boolean } {
    const e = this.#entry(key, now);
    const before = e.shared + e.pending;
    if (before >= this.limit) return { allowed: false, count: before + 1, msLeft: e.expire - now };
    e.pending++;
    return { allowed: true, count: before + 1, msLeft: e.expire - now };
  }

  /** Counts a hit whatever the window holds (a failure that happened). */
  add(key: string, now = Date.now()): void {
    this.#entry(key, now).pending++;
  }

  /** The hits to sync, taken off the books until the sync reports back. */
  drain(now: number): { key: string; points: number; expire: number; entry: Entry }[] {
    const out: { key: string; points: number; expire: number; entry: Entry }[] = [];
    for (const [key, e] of this.#entries) {
      if (e.expire <= now) {
        this.#entries.delete(key);
      } else if (e.pending > 0) {
        out.push({ key: `${this.prefix}:${key}`, points: e.pending, expire: e.expire, entry: e });
        e.shared += e.pending;
        e.pending = 0;
      }
    }
    return out;
  }

  /** The database's word on a synced key: every node's total, and the window's end the first writer set. */
  static settle(entry: Entry, total: number, expire: number): void {
    entry.shared = Math.max(entry.shared, total);
    entry.expire = expire;
  }

  /** A failed sync: its hits are this node's again, to be sent next time. */
  static restore(entry: Entry, points: number): void {
    entry.shared -= points;
    entry.pending += points;
  }
}

/**
 * Rows per statement. On SQLite a statement runs on the event loop, every request of the worker waiting: an
 * upsert of 500 keys held it for 2-5 ms, once a second (an enterprise's users behind one client are as many keys);
 * 100 keys take well under a millisecond, with a turn of the event loop between two statements.
 */
const BATCH = 100;

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Adds every window's unsynced hits to `rate_limits` and reads the totals back: one upsert per batch of keys,
 * the same statement on SQLite and PostgreSQL. A row whose window has ended starts over with these hits. On
 * SQLite the write lock is waited for without stopping the event loop (src/db/immediate.ts).
 */
export async function syncWindows(db: DB, windows: readonly SharedWindow[], now = Date.now()): Promise<void> {
  const drained = windows.flatMap((w) => w.drain(now));
  for (let i = 0; i < drained.length; i += BATCH) {
    const batch = drained.slice(i, i + BATCH);
    if (i > 0) await turn();
    try {
      const rows = await writeWithoutBlocking(db, (via) => via.insertInto('rate_limits')
        .values(batch.map(({ key, points, expire }) => ({ key, points, expire })))
        .onConflict((oc) => oc.column('key').doUpdateSet({
          points: sql<number>`case when ${sql.ref('rate_limits.expire')} <= ${now} then ${sql.ref('excluded.points')} else ${sql.ref('rate_limits.points')} + ${sql.ref('excluded.points')} end`,
          expire: sql<number>`case when ${sql.ref('rate_limits.expire')} <= ${now} then ${sql.ref('excluded.expire')} else ${sql.ref('rate_limits.expire')} end`,
        }))
        .returning(['key', 'points', 'expire'])
        .execute());
      const byKey = new Map(rows.map((r) => [r.key, r]));
      for (const d of batch) {
        const r = byKey.get(d.key);
        if (r) SharedWindow.settle(d.entry, Number(r.points), Number(r.expire));
      }
    } catch (err) {
      for (const d of drained.slice(i)) SharedWindow.restore(d.entry, d.points);
      throw err;
    }
  }
}
