import { sql, type Kysely } from 'kysely';

/**
 * The audit filter by MCP server (0005's `audit_by_resources`) indexed `resources` whatever its length, but
 * PostgreSQL refuses a B-tree entry over about 2.7 kB: the audit row of a request naming hundreds of resources
 * (hostile, and denied) could not be written, so the exchange failed closed (503) instead of answering 400.
 * The filter only ever looks for one resource, so the index now covers the rows whose `resources` is at most
 * AUDIT_RESOURCES_INDEXED characters (≤ 2 kB in UTF-8, with room for `at` and `id`), on both dialects; the
 * filter names the same condition so either planner uses the partial index (src/admin/audit-query.ts).
 */
export const AUDIT_RESOURCES_INDEXED = 512;

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('audit_by_resources').execute();
  await db.schema.createIndex('audit_by_resources').on('audit_log').columns(['resources', 'at', 'id'])
    .where(sql<boolean>`length(${sql.ref('resources')}) <= ${sql.lit(AUDIT_RESOURCES_INDEXED)}`).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('audit_by_resources').execute();
  await db.schema.createIndex('audit_by_resources').on('audit_log').columns(['resources', 'at', 'id']).execute();
}
