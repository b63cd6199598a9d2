import type { Kysely } from 'kysely';

// The demo MCP server (src/demo): each user's todo list, keyed by the `sub` the access token carries (the
// ID-JAG's subject), so what one user adds another never sees.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('demo_todos')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('owner_sub', 'text', (c) => c.notNull())
    .addColumn('text', 'text', (c) => c.notNull())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('demo_todos_by_owner').on('demo_todos').columns(['owner_sub', 'created_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('demo_todos').execute();
}
