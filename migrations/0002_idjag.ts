import type { Kysely } from 'kysely';

// The ID-JAG side: Resource authorization servers, their MCP servers, the policy rules between clients and
// them, and the append-only audit log of every token-exchange decision.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('resource_servers')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('issuer', 'text', (c) => c.notNull().unique())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();

  // Other names a client may use as `audience` for the same Resource AS (e.g. a URN).
  await db.schema.createTable('resource_server_aliases')
    .addColumn('alias', 'text', (c) => c.primaryKey())
    .addColumn('resource_server_id', 'text', (c) => c.notNull().references('resource_servers.id').onDelete('cascade'))
    .execute();
  await db.schema.createIndex('resource_server_aliases_by_server').on('resource_server_aliases').column('resource_server_id').execute();

  await db.schema.createTable('mcp_servers')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('resource', 'text', (c) => c.notNull().unique())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('resource_server_id', 'text', (c) => c.notNull().references('resource_servers.id').onDelete('cascade'))
    .addColumn('scopes', 'text', (c) => c.notNull())
    .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('mcp_servers_by_resource_server').on('mcp_servers').column('resource_server_id').execute();

  await db.schema.createTable('policy_rules')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('client_id', 'text', (c) => c.notNull().references('clients.client_id').onDelete('cascade').onUpdate('cascade'))
    .addColumn('resource_server_id', 'text', (c) => c.notNull().references('resource_servers.id').onDelete('cascade'))
    // null: the rule covers the whole Resource AS (audience-only requests and every MCP server of it)
    .addColumn('mcp_server_id', 'text', (c) => c.references('mcp_servers.id').onDelete('cascade'))
    .addColumn('subject_kind', 'text', (c) => c.notNull())
    .addColumn('subjects', 'text', (c) => c.notNull())
    .addColumn('scopes', 'text', (c) => c.notNull())
    .addColumn('default_scopes', 'text', (c) => c.notNull())
    .addColumn('rs_client_id', 'text')
    .addColumn('lifetime', 'integer', (c) => c.notNull())
    .addColumn('max_auth_age', 'integer')
    .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('description', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('updated_by', 'text', (c) => c.notNull())
    .execute();
  // The token endpoint's lookup: every rule of one client for one Resource AS, whatever the table's size.
  await db.schema.createIndex('policy_rules_by_client_target').on('policy_rules').columns(['client_id', 'resource_server_id', 'mcp_server_id']).execute();
  await db.schema.createIndex('policy_rules_by_mcp_server').on('policy_rules').column('mcp_server_id').execute();

  await db.schema.createTable('audit_log')
    // UUIDv7: time-ordered, so (at, id) is a stable keyset without a dialect-specific sequence
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('at', 'bigint', (c) => c.notNull())
    .addColumn('request_id', 'text', (c) => c.notNull())
    .addColumn('decision', 'text', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('explanation', 'text', (c) => c.notNull())
    .addColumn('error', 'text')
    .addColumn('client_id', 'text')
    .addColumn('sub', 'text')
    .addColumn('username', 'text')
    .addColumn('audience', 'text')
    .addColumn('resources', 'text')
    .addColumn('scopes_requested', 'text')
    .addColumn('scopes_granted', 'text')
    .addColumn('rule_id', 'text')
    .addColumn('jti', 'text')
    .addColumn('exp', 'bigint')
    .addColumn('subject_token_type', 'text')
    .addColumn('ip', 'text')
    .addColumn('user_agent', 'text')
    .addColumn('duration_ms', 'real')
    .addColumn('checks', 'text', (c) => c.notNull())
    .execute();
  // Every index costs each exchange a B-tree insert. These serve the admin's filters with keyset pagination;
  // there is deliberately none on jti: random keys make the most expensive index of all, and a jti is looked
  // up only by an investigation, which can afford a scan.
  await db.schema.createIndex('audit_by_time').on('audit_log').columns(['at', 'id']).execute();
  await db.schema.createIndex('audit_by_client').on('audit_log').columns(['client_id', 'at', 'id']).execute();
  await db.schema.createIndex('audit_by_sub').on('audit_log').columns(['sub', 'at', 'id']).execute();
  await db.schema.createIndex('audit_by_decision').on('audit_log').columns(['decision', 'at', 'id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['audit_log', 'policy_rules', 'mcp_servers', 'resource_server_aliases', 'resource_servers']) {
    await db.schema.dropTable(t).execute();
  }
}
