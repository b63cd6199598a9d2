import type { Kysely } from 'kysely';

// DPoP proofs the token exchange accepted (RFC 9449 §11.1): one row per proof, keyed by a hash of its key's
// thumbprint and its `jti`, kept until the proof would be refused as stale anyway. The primary key makes
// "first use wins" atomic across every node on the database; expired rows are purged by the periodic cleanup.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('dpop_proofs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    // epoch seconds
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('dpop_proofs_by_expiry').on('dpop_proofs').column('expires_at').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('dpop_proofs').execute();
}
