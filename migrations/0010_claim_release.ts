import type { Kysely } from 'kysely';

/**
 * What an ID-JAG says about the user, per Resource AS (draft §3; the MCP extension asks that email addresses
 * be left out unless strictly necessary): the identity claims it releases, the format of `sub_id`, its
 * `aud_tenant`, and per user the subject identifier the Resource AS knows them by (`aud_sub`).
 *
 * A new Resource AS releases nothing. Every Resource AS already stored released `email` before this
 * migration (the only claim idjag issued then), so those keep releasing it: an upgrade changes no ID-JAG.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('resource_servers').addColumn('released_claims', 'text', (c) => c.notNull().defaultTo('[]')).execute();
  await db.schema.alterTable('resource_servers').addColumn('aud_tenant', 'text').execute();
  await db.schema.alterTable('resource_servers').addColumn('sub_id_format', 'text').execute();
  await db.updateTable('resource_servers').set({ released_claims: JSON.stringify(['email']) }).execute();

  await db.schema.createTable('audience_subjects')
    .addColumn('resource_server_id', 'text', (c) => c.notNull().references('resource_servers.id').onDelete('cascade'))
    .addColumn('user_sub', 'text', (c) => c.notNull().references('users.sub').onDelete('cascade'))
    .addColumn('aud_sub', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('audience_subjects_pk', ['resource_server_id', 'user_sub'])
    // one account at the Resource AS is one user here: two users with the same aud_sub would be one person there
    .addUniqueConstraint('audience_subjects_unique', ['resource_server_id', 'aud_sub'])
    .execute();
  await db.schema.createIndex('audience_subjects_by_user').on('audience_subjects').column('user_sub').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('audience_subjects').execute();
  for (const column of ['sub_id_format', 'aud_tenant', 'released_claims']) {
    await db.schema.alterTable('resource_servers').dropColumn(column).execute();
  }
}
