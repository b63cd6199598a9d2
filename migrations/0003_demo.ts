import type { Kysely } from 'kysely';

// The demo Resource AS (src/demo): the ID-JAG `jti`s it has accepted, kept until they expire, so a restart
// does not reopen the replay window. Its own signing key lives in `settings`.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('demo_jti')
    .addColumn('jti', 'text', (c) => c.primaryKey())
    .addColumn('exp', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('demo_jti_by_exp').on('demo_jti').column('exp').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('demo_jti').execute();
}
