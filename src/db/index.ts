import { mkdirSync } from 'node:fs';
import { dirname, extname } from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, PostgresAdapter, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { Migrator, type Migration, type MigrationProvider } from 'kysely/migration';
import { migrations } from '../../migrations/index.ts';
import type { Schema } from './schema.ts';
import { startCheckpointer } from './checkpointer.ts';
import { STATEMENT_NAMES } from './prepared.ts';

export type { Schema } from './schema.ts';
export type DB = Kysely<Schema>;

interface DatabaseBase {
  db: DB;
  /** where it is: a file path, or a PostgreSQL URL with any password removed */
  location: string;
  close(): Promise<void>;
}

export interface SqliteDatabase extends DatabaseBase {
  dialect: 'sqlite';
  /** for diagnostics and integrity checks the query builder cannot express */
  sqlite: SQLite.Database;
}

export interface PostgresDatabase extends DatabaseBase {
  dialect: 'postgres';
  /** the connection pool kysely uses, for what must share it (rate-limit counters) */
  pool: pg.Pool;
}

/** SQLite for one machine (the default), PostgreSQL for several nodes on one database. */
export type Database = SqliteDatabase | PostgresDatabase;

/** A kysely instance (or transaction) on PostgreSQL, where every statement is a network round trip. */
export const onPostgres = (db: Kysely<Schema>): boolean => db.getExecutor().adapter instanceof PostgresAdapter;

export const isPostgresUrl = (location: string): boolean => /^postgres(ql)?:\/\//i.test(location);

const STATEMENT_CACHE_SIZE = 512;

/**
 * kysely's SQLite driver calls `prepare()` for every query, which costs about as much as running the query.
 * Statements are reusable, so hand the driver a facade whose `prepare` remembers them (bounded, oldest out).
 */
export function withStatementCache(sqlite: SQLite.Database): SQLite.Database {
  const cache = new Map<string, SQLite.Statement>();
  const prepare = (source: string) => {
    let stmt = cache.get(source);
    if (!stmt) {
      stmt = sqlite.prepare(source);
      if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value!);
      cache.set(source, stmt);
    }
    return stmt;
  };
  return new Proxy(sqlite, {
    get(target, prop) {
      if (prop === 'prepare') return prepare;
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

export function openDatabase(location: string): Database {
  return isPostgresUrl(location) ? openPostgres(location) : openSqlite(location);
}

/**
 * The schema name, on SQLite, of the second database file: what requests write as they are served (the two
 * audit trails, `audit_log` and `login_events`, and the DPoP proofs seen, `dpop_proofs`; migration
 * 0013_audit_database). SQLite drops a connection's whole page cache of a file whenever another connection
 * commits to it; with every exchange writing its audit row, workers sharing one file would each re-read the
 * users, clients and rules from disk on nearly every request. Kept apart, the file they read changes only when
 * an admin or a sign-in changes it. Queries name these tables unqualified: SQLite finds them in either file.
 */
export const AUDIT_SCHEMA = 'audit';

/** Where the audit database of a SQLite file lives: beside it, `data/idjag.db` → `data/idjag.audit.db`. */
export function auditFileOf(path: string): string {
  if (path === ':memory:') return ':memory:';
  const ext = extname(path);
  return ext ? `${path.slice(0, -ext.length)}.audit${ext}` : `${path}.audit`;
}

/** How long a SQLite connection waits for another's write lock before it fails with SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 5000;

const handles = new WeakMap<DB, SQLite.Database>();

/**
 * The better-sqlite3 connection under a kysely instance openDatabase made (its statement cache in front), for
 * what kysely cannot say (src/db/immediate.ts); undefined on PostgreSQL or for a kysely instance made elsewhere.
 */
export const sqliteHandleOf = (db: DB): SQLite.Database | undefined => handles.get(db);

function openSqlite(path: string): SqliteDatabase {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const sqlite = new SQLite(path);
  sqlite.prepare(`attach database ? as ${AUDIT_SCHEMA}`).run(auditFileOf(path));
  for (const schema of ['main', AUDIT_SCHEMA]) {
    sqlite.pragma(`${schema}.journal_mode = WAL`);
    // NORMAL in WAL mode survives a process crash (kill -9); only an OS crash can lose the last commits.
    sqlite.pragma(`${schema}.synchronous = NORMAL`);
    // Reads through a memory map: re-reading a page another worker's commit made stale costs no system call.
    sqlite.pragma(`${schema}.mmap_size = 268435456`);
  }
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  const cached = withStatementCache(sqlite);
  const db = new Kysely<Schema>({ dialect: new SqliteDialect({ database: cached }) });
  handles.set(db, cached);
  const checkpointer = path === ':memory:' ? undefined
    : startCheckpointer(sqlite, [{ schema: 'main', path }, { schema: AUDIT_SCHEMA, path: auditFileOf(path) }]);
  return {
    db,
    dialect: 'sqlite',
    location: path,
    sqlite,
    async close() {
      await checkpointer?.stop();
      await db.destroy();
    },
  };
}

// bigint columns hold epoch seconds and milliseconds: well inside Number's exact range, so read them as
// numbers, as SQLite returns them (pg returns int8 as strings by default). Set per pool, not globally.
const INT8_OID = 20;
const pgTypes = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    (oid === INT8_OID && format !== 'binary' ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
};

export const POOL_SIZE = 10;

/**
 * A pg client that runs the hot path's prepared queries (prepared.ts) as named statements: PostgreSQL then parses
 * and plans each once per connection, where an unnamed statement is parsed and planned on every execution.
 */
class NamedStatementClient extends pg.Client {
  override query(...args: unknown[]): never {
    const [text, values] = args;
    const name = typeof text === 'string' && Array.isArray(values) && args.length === 2 ? STATEMENT_NAMES.get(text) : undefined;
    const call = super.query as (...a: unknown[]) => never;
    return name === undefined ? call.apply(this, args) : call.call(this, { name, text, values });
  }
}
const CONNECT_TIMEOUT_MS = 5000;

function openPostgres(url: string): PostgresDatabase {
  // A connection attempt that hangs (a host gone from the network) fails after a few seconds instead of
  // holding a request forever: the exchange then fails closed (503) and /healthz says so.
  const pool = new pg.Pool({
    connectionString: url, max: POOL_SIZE, types: pgTypes, application_name: 'idjag', connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    Client: NamedStatementClient,
  });
  // An idle client's error (the server restarting, a network cut) must not crash the process; the next
  // query gets a fresh connection or its own error.
  pool.on('error', () => {});
  // Nor that of a client checked out between two statements (in a transaction, or between a kysely checkout and
  // its query): pg-pool listens only while a client is idle, and a client with no query running emits the error
  // unhandled. The next statement on it fails (closing the transaction), and the pool discards it on release.
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = new Kysely<Schema>({ dialect: new PostgresDialect({ pool }) });
  const redacted = new URL(url);
  if (redacted.password) redacted.password = '***';
  if (redacted.searchParams.has('password')) redacted.searchParams.set('password', '***');
  return {
    db,
    dialect: 'postgres',
    location: redacted.toString(),
    pool,
    async close() {
      await db.destroy();
    },
  };
}

/**
 * Runs `fn` while no other idjag process on the same database runs one: first-start work reads, then writes
 * (is there an active signing key? is the database empty?), so two nodes starting together on an empty
 * PostgreSQL database would otherwise both generate keys, or both seed. A session advisory lock held on one
 * pooled connection; on SQLite, one machine's file, there is nothing to coordinate.
 */
export async function exclusively<T>(database: Database, fn: () => Promise<T>): Promise<T> {
  if (database.dialect === 'sqlite') return fn();
  const client = await database.pool.connect();
  let broken: unknown;
  try {
    await client.query("select pg_advisory_lock(hashtext('idjag.startup'))");
    try {
      return await fn();
    } finally {
      await client.query("select pg_advisory_unlock(hashtext('idjag.startup'))").catch((err: unknown) => { broken = err; });
    }
  } finally {
    // a connection whose unlock failed may still hold the lock: close it rather than pool it
    client.release(broken instanceof Error ? broken : undefined);
  }
}

class StaticMigrationProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations;
  }
}

export interface MigrationOutcome {
  applied: string[];
}

/** Applies every pending migration in name order; a failure leaves the database at the last good one. */
export async function migrateToLatest(db: DB): Promise<MigrationOutcome> {
  const migrator = new Migrator({ db, provider: new StaticMigrationProvider() });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    throw new Error(`migration ${failed ?? '(unknown)'} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  return { applied: (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName) };
}

export const now = (): number => Math.floor(Date.now() / 1000);
