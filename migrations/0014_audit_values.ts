import { sql, SqliteAdapter, type Kysely } from 'kysely';

/**
 * `audit_values`: strings that repeat across many audit rows, stored once and named in the rows by number
 * (src/audit/values.ts): the `kid` of the key that verified the ID Token, 43 characters in every issued row
 * before. On SQLite it lives beside the audit log in the audit file (0013). Rows written before keep their
 * values inline and read as they did.
 *
 * Down writes each value back into the rows that name it, then drops the table.
 */
const onSqlite = (db: Kysely<any>) => db.getExecutor().adapter instanceof SqliteAdapter;

export async function up(db: Kysely<any>): Promise<void> {
  if (onSqlite(db)) {
    await db.schema.withSchema('audit').createTable('audit_values')
      .addColumn('n', 'integer', (c) => c.primaryKey())
      .addColumn('value', 'text', (c) => c.notNull().unique())
      .execute();
    return;
  }
  await db.schema.createTable('audit_values')
    .addColumn('n', 'integer', (c) => c.primaryKey().generatedByDefaultAsIdentity())
    .addColumn('value', 'text', (c) => c.notNull().unique())
    .execute();
}

/** The codes of the checks whose message may be interned (src/audit/codec.ts, INTERNED_CHECKS): `id_token.key`. */
const INTERNED_CODES = [11];

export async function down(db: Kysely<any>): Promise<void> {
  const values = await db.selectFrom('audit_values').select(['n', 'value']).execute();
  for (const { n, value } of values) {
    for (const code of INTERNED_CODES) {
      // a stored tuple `[11,"p",3]` becomes `[11,"p","<kid>"]`: the closing bracket keeps 3 from matching 31
      const [from, to] = [`[${code},"p",${Number(n)}]`, `[${code},"p",${JSON.stringify(value)}]`];
      await sql`update audit_log set checks = replace(checks, ${from}, ${to}) where checks like ${`%${from}%`}`.execute(db);
    }
  }
  if (onSqlite(db)) await db.schema.withSchema('audit').dropTable('audit_values').execute();
  else await db.schema.dropTable('audit_values').execute();
}
