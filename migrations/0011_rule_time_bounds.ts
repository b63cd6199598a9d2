import type { Kysely } from 'kysely';

// Time-bound rules (temporary access for a project or an incident): a rule is in force from `not_before`
// (inclusive) until `expires_at` (exclusive), both epoch seconds like every entity time; null leaves that side
// open. The policy engine compares them with the decision's time, so nothing has to run when a rule expires.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('policy_rules').addColumn('not_before', 'bigint').execute();
  await db.schema.alterTable('policy_rules').addColumn('expires_at', 'bigint').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('policy_rules').dropColumn('expires_at').execute();
  await db.schema.alterTable('policy_rules').dropColumn('not_before').execute();
}
