import type { Kysely } from 'kysely';

// The admin side: every change an admin makes (through the JSON API, the web UI or an import) is appended to
// admin_changes, with who, what, and the entity before and after. Snapshots never hold secrets or password
// hashes. And two audit_log indexes the admin's audit filters need to stay on an index at any table size.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('admin_changes')
    // UUIDv7, like audit_log: (at, id) is the keyset for newest-first pages
    .addColumn('id', 'text', (c) => c.primaryKey())
    // epoch milliseconds
    .addColumn('at', 'bigint', (c) => c.notNull())
    // 'client:<id>' for the JSON API, 'user:<username>' for the web UI, 'seed' for the seed
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('entity', 'text', (c) => c.notNull())
    // the entity's natural key: client_id, username, group name, issuer, resource, rule id
    .addColumn('entity_id', 'text', (c) => c.notNull())
    // JSON snapshots in the configuration document's shape; null before a create and after a delete
    .addColumn('before', 'text')
    .addColumn('after', 'text')
    // the HTTP request that made the change: an import's rows share it
    .addColumn('request_id', 'text')
    .execute();
  await db.schema.createIndex('admin_changes_by_time').on('admin_changes').columns(['at', 'id']).execute();
  await db.schema.createIndex('admin_changes_by_entity').on('admin_changes').columns(['entity', 'entity_id', 'at', 'id']).execute();

  // Audit filters by reason and by MCP server: without these, a rare reason or a quiet server would walk the
  // whole time index to fill one page. `resources` holds the JSON array the exchange wrote; the filter matches
  // the single-resource array exactly, so it is an equality on the index.
  await db.schema.createIndex('audit_by_reason').on('audit_log').columns(['reason', 'at', 'id']).execute();
  await db.schema.createIndex('audit_by_resources').on('audit_log').columns(['resources', 'at', 'id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('audit_by_resources').execute();
  await db.schema.dropIndex('audit_by_reason').execute();
  await db.schema.dropTable('admin_changes').execute();
}
