import type { Kysely } from 'kysely';

/**
 * RFC 9396 authorization_details at the token exchange, and RFC 8693's actor_token: which detail `type`s a
 * rule lets its client be granted, and what the audit log keeps of a request's details and actor token (the
 * types requested and granted; the actor token's type and SHA-256, never the token).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('policy_rules').addColumn('authorization_details_types', 'text', (c) => c.notNull().defaultTo('[]')).execute();
  for (const column of ['details_requested', 'details_granted', 'actor_token_type', 'actor_token_hash']) {
    await db.schema.alterTable('audit_log').addColumn(column, 'text').execute();
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const column of ['actor_token_hash', 'actor_token_type', 'details_granted', 'details_requested']) {
    await db.schema.alterTable('audit_log').dropColumn(column).execute();
  }
  await db.schema.alterTable('policy_rules').dropColumn('authorization_details_types').execute();
}
