import { sql, SqliteAdapter, type Kysely } from 'kysely';

/**
 * On SQLite, the tables every request writes move to a second file, attached to each connection as `audit`
 * (src/db/index.ts opens it beside the main file: `idjag.db` → `idjag.audit.db`): the audit log, the sign-in
 * log and the DPoP proofs seen. SQLite drops a connection's whole page cache of a file whenever another
 * connection commits to that file, so with the audit rows in the main file each worker re-read the users,
 * clients and rules from disk on nearly every exchange; the main file now changes only when the directory,
 * the policy or a sign-in does. Queries keep naming these tables unqualified (SQLite looks in every attached
 * file), so no query changes; PostgreSQL, whose buffer cache all connections share, keeps them where they are.
 *
 * Each table is recreated in `audit` from its own definition, its rows copied and its indexes recreated there
 * (one transaction, on that file alone), then the original dropped (a second one): SQLite makes a transaction
 * atomic within each file, not across two in WAL mode, so each step writes one file, and a run interrupted
 * between them is finished by the next (a table found in both files is copied again). The main file keeps the
 * freed pages for reuse (VACUUM returns them). A later migration that creates an index on these tables must
 * name the schema (`create index audit.x on audit_log ...`): an unqualified CREATE INDEX looks for its table
 * in the main file only.
 */
export const AUDIT_TABLES = ['audit_log', 'login_events', 'dpop_proofs'] as const;

const onSqlite = (db: Kysely<any>) => db.getExecutor().adapter instanceof SqliteAdapter;

interface Definition { type: 'table' | 'index'; name: string; sql: string }

async function move(db: Kysely<any>, from: string, to: string): Promise<void> {
  const attached = await sql<{ name: string }>`pragma database_list`.execute(db);
  if (!attached.rows.some((r) => r.name === 'audit')) {
    throw new Error('the audit database is not attached: open the database with openDatabase() (src/db), which attaches it');
  }
  const has = async (schema: string, table: string) => (await sql<{ n: number }>`select count(*) as n from ${sql.ref(`${schema}.sqlite_master`)}
    where type = 'table' and name = ${table}`.execute(db)).rows[0]!.n > 0;
  for (const table of AUDIT_TABLES) {
    const [inFrom, inTo] = [await has(from, table), await has(to, table)];
    if (!inFrom && inTo) continue;
    if (!inFrom) throw new Error(`table ${table} is in neither database`);
    const definitions = await sql<Definition>`select type, name, sql from ${sql.ref(`${from}.sqlite_master`)}
      where tbl_name = ${table} and sql is not null order by type = 'index', name`.execute(db);
    await db.transaction().execute(async (trx) => {
      if (inTo) await sql.raw(`drop table "${to}"."${table}"`).execute(trx);
      for (const d of definitions.rows) {
        // `create table "audit_log" (...)` → `create table "audit"."audit_log" (...)`, and likewise for each index
        const qualified = d.sql.replace(/^(\s*create\s+(?:unique\s+)?(?:table|index)\s+)("[^"]+"|\S+)/i, `$1"${to}".$2`);
        if (qualified === d.sql) throw new Error(`cannot read the definition of ${d.name}: ${d.sql}`);
        await sql.raw(qualified).execute(trx);
        if (d.type === 'table') await sql.raw(`insert into "${to}"."${table}" select * from "${from}"."${table}"`).execute(trx);
      }
    });
    await sql.raw(`drop table "${from}"."${table}"`).execute(db);
  }
}

export async function up(db: Kysely<any>): Promise<void> {
  if (onSqlite(db)) await move(db, 'main', 'audit');
}

export async function down(db: Kysely<any>): Promise<void> {
  if (onSqlite(db)) await move(db, 'audit', 'main');
}
