import type { Kysely } from 'kysely';
import type { DB, Schema } from './index.ts';
import { prepared } from './prepared.ts';

/**
 * The change counters (migrations/0015_change_counters.ts): raised by triggers with every change to the
 * directory (users, groups, aud_subs) and to the catalog (Resource ASes, aliases, MCP servers, rules).
 */
export interface Counters {
  directory: number;
  catalog: number;
}

/** Both counters as columns of a select (`directory`, `catalog`), to ride along with another read. */
export const counterColumns = (db: Kysely<Schema>) => [
  db.selectFrom('change_counters').select('counter').where('name', '=', 'directory').as('directory'),
  db.selectFrom('change_counters').select('counter').where('name', '=', 'catalog').as('catalog'),
] as const;

const countersNow = prepared<Schema, Record<string, never>, Counters>((db) => db.selectNoFrom(counterColumns(db)));

/** The counters now, on their own (when no other read brought them). */
export async function readCounters(db: DB): Promise<Counters> {
  const [row] = await countersNow(db, {});
  if (!row || row.directory === null || row.catalog === null) throw new Error('change_counters is missing its rows');
  return { directory: Number(row.directory), catalog: Number(row.catalog) };
}
