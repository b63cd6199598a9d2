import type { Kysely } from 'kysely';

// Lint warnings about a token-exchange request (discouraged but accepted usage), for the client's own view.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('audit_log').addColumn('warnings', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('audit_log').dropColumn('warnings').execute();
}
