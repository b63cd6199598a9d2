import type { DB } from '../db/index.ts';

/**
 * `audit_values`: strings that repeat across many audit rows, stored once and named by number in the rows
 * (codec.ts, INTERNED_CHECKS). A value's number never changes and a value is never removed, so a writer may
 * keep the numbers it has seen for as long as it runs; a reader reads the table (a few rows: one per key the
 * IdP has signed ID Tokens with) each time it decodes.
 */

const numbers = new WeakMap<DB, Map<string, number>>();

/** The number of each value, giving one to those that have none yet (on any node: the value is unique). */
export async function internValues(db: DB, values: readonly string[]): Promise<ReadonlyMap<string, number>> {
  let known = numbers.get(db);
  if (!known) numbers.set(db, (known = new Map()));
  const out = new Map<string, number>();
  for (const value of values) {
    let n = known.get(value);
    if (n === undefined) {
      await db.insertInto('audit_values').values({ value }).onConflict((oc) => oc.column('value').doNothing()).execute();
      n = (await db.selectFrom('audit_values').select('n').where('value', '=', value).executeTakeFirstOrThrow()).n;
      known.set(value, n);
    }
    out.set(value, n);
  }
  return out;
}

/** Every interned value by its number, for decoding rows. */
export async function auditValues(db: DB): Promise<ReadonlyMap<number, string>> {
  const rows = await db.selectFrom('audit_values').select(['n', 'value']).execute();
  return new Map(rows.map((r) => [Number(r.n), r.value]));
}
