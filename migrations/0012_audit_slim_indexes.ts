import { sql, type Kysely } from 'kysely';
import { AUDIT_RESOURCES_INDEXED } from './0008_audit_resources_index.ts';

/**
 * The audit filters' indexes without `id`. Each carried the 36-character UUID again (six copies of it per
 * row, a third of what the indexes cost), yet `at` alone orders a filter's rows: rows of the same millisecond
 * are few, and both planners sort just those by id (SQLite's "temp B-tree for right part of ORDER BY",
 * PostgreSQL's incremental sort). The keyset condition names `at <= ?` on its own so either planner seeks on
 * it (src/admin/audit-query.ts). Lookups by id keep the primary key.
 *
 * And the decision filter's index holds only the decisions that are not issues: an issued row's reason is
 * `issued`, so the reason index finds those, and the rows most exchanges write cost this index nothing.
 */
const FILTERS = [['audit_by_client', 'client_id'], ['audit_by_sub', 'sub'], ['audit_by_reason', 'reason']] as const;
const NOT_ISSUED = sql<boolean>`${sql.ref('decision')} <> ${sql.lit('issued')}`;
const withinIndexed = sql<boolean>`length(${sql.ref('resources')}) <= ${sql.lit(AUDIT_RESOURCES_INDEXED)}`;

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('audit_by_time').execute();
  await db.schema.createIndex('audit_by_time').on('audit_log').column('at').execute();
  for (const [name, column] of FILTERS) {
    await db.schema.dropIndex(name).execute();
    await db.schema.createIndex(name).on('audit_log').columns([column, 'at']).execute();
  }
  await db.schema.dropIndex('audit_by_resources').execute();
  await db.schema.createIndex('audit_by_resources').on('audit_log').columns(['resources', 'at']).where(withinIndexed).execute();
  await db.schema.dropIndex('audit_by_decision').execute();
  await db.schema.createIndex('audit_by_decision').on('audit_log').columns(['decision', 'at']).where(NOT_ISSUED).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('audit_by_time').execute();
  await db.schema.createIndex('audit_by_time').on('audit_log').columns(['at', 'id']).execute();
  for (const [name, column] of FILTERS) {
    await db.schema.dropIndex(name).execute();
    await db.schema.createIndex(name).on('audit_log').columns([column, 'at', 'id']).execute();
  }
  await db.schema.dropIndex('audit_by_resources').execute();
  await db.schema.createIndex('audit_by_resources').on('audit_log').columns(['resources', 'at', 'id']).where(withinIndexed).execute();
  await db.schema.dropIndex('audit_by_decision').execute();
  await db.schema.createIndex('audit_by_decision').on('audit_log').columns(['decision', 'at', 'id']).execute();
}
