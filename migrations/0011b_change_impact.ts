import type { Kysely } from 'kysely';

// A policy change's impact on recorded traffic (src/admin/impact.ts), kept with the change that caused it:
// a JSON summary (counts per kind, per client and target, example audit ids, the window replayed and whether
// the replay hit its cap); null for changes saved without one.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('admin_changes').addColumn('impact', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('admin_changes').dropColumn('impact').execute();
}
