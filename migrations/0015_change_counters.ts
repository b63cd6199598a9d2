import { sql, SqliteAdapter, type Kysely } from 'kysely';

/**
 * `change_counters`: one counter per part of the data a token exchange reads, raised by a trigger in the same
 * transaction as every change to that part, whoever makes it (the admin, the CLI, SCIM-like scripts, a hand-run
 * UPDATE). A token exchange reads the counters with the client (one statement it makes anyway) and answers from
 * what it read before while they are unchanged (src/exchange/lookup-cache.ts): a change is seen by the next
 * exchange, as when everything was read every time.
 *
 * - `directory`: who the users are (users, group_members) and what each Resource AS calls them (audience_subjects);
 * - `catalog`: the Resource ASes, their aliases, the MCP servers and the policy rules.
 *
 * SQLite has row triggers only; PostgreSQL's are per statement (one raise per UPDATE, however many rows).
 */
export const COUNTED: Record<'directory' | 'catalog', readonly string[]> = {
  directory: ['users', 'group_members', 'audience_subjects'],
  catalog: ['resource_servers', 'resource_server_aliases', 'mcp_servers', 'policy_rules'],
};

const onSqlite = (db: Kysely<any>) => db.getExecutor().adapter instanceof SqliteAdapter;
const OPS = ['insert', 'update', 'delete'] as const;
const triggers = () => Object.entries(COUNTED).flatMap(([counter, tables]) => tables.map((table) => ({ counter, table })));

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('change_counters')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('counter', 'bigint', (c) => c.notNull())
    .execute();
  await db.insertInto('change_counters').values(Object.keys(COUNTED).map((name) => ({ name, counter: 0 }))).execute();
  if (onSqlite(db)) {
    for (const { counter, table } of triggers()) {
      for (const op of OPS) {
        await sql`create trigger ${sql.id(`${table}_${op}_counts`)} after ${sql.raw(op)} on ${sql.table(table)} begin
          update change_counters set counter = counter + 1 where name = ${sql.lit(counter)}; end`.execute(db);
      }
    }
    return;
  }
  await sql`create function idjag_count_change() returns trigger language plpgsql as $$
    begin update change_counters set counter = counter + 1 where name = tg_argv[0]; return null; end $$`.execute(db);
  for (const { counter, table } of triggers()) {
    await sql`create trigger ${sql.id(`${table}_counts`)} after insert or update or delete or truncate on ${sql.table(table)}
      for each statement execute function idjag_count_change(${sql.lit(counter)})`.execute(db);
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  if (onSqlite(db)) {
    for (const { table } of triggers()) for (const op of OPS) await sql`drop trigger ${sql.id(`${table}_${op}_counts`)}`.execute(db);
  } else {
    for (const { table } of triggers()) await sql`drop trigger ${sql.id(`${table}_counts`)} on ${sql.table(table)}`.execute(db);
    await sql`drop function idjag_count_change()`.execute(db);
  }
  await db.schema.dropTable('change_counters').execute();
}
