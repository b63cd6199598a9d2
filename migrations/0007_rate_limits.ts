import type { Kysely } from 'kysely';

// Throttling (issue 7).
//
// `rate_limits` is rate-limiter-flexible's store: one row per throttled key (`<limiter prefix>:<key>`), its
// points and when they expire (epoch milliseconds; a block is a row whose points exceed the limit until
// `expire`). It has exactly the shape the library's SQLite and PostgreSQL limiters use, so a PostgreSQL
// deployment shares it between nodes unchanged; it is created here, not by the library, so the schema stays
// with the migrations (the limiters run with `tableCreated: true`). Expired rows are purged by the periodic
// cleanup.
//
// `login_events` is the sign-in audit trail: every success, failure and throttled attempt at the login form.
// It is kept apart from audit_log, which holds token-exchange decisions only (the admin's audit queries,
// counts and exports read that one).
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable('rate_limits')
    .addColumn('key', 'varchar(255)', (c) => c.primaryKey())
    .addColumn('points', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('expire', 'bigint')
    .execute();

  await db.schema.createTable('login_events')
    // UUIDv7, like audit_log: (at, id) is the keyset for newest-first pages
    .addColumn('id', 'text', (c) => c.primaryKey())
    // epoch milliseconds
    .addColumn('at', 'bigint', (c) => c.notNull())
    .addColumn('request_id', 'text', (c) => c.notNull())
    // succeeded | failed | throttled
    .addColumn('event', 'text', (c) => c.notNull())
    // failed: unknown_user | wrong_password | disabled; throttled: account | ip (which limit refused it)
    .addColumn('reason', 'text')
    // the account name as the throttle keys it: trimmed and case-folded, whether or not such a user exists
    .addColumn('username', 'text', (c) => c.notNull())
    // the user's sub, when the password matched
    .addColumn('sub', 'text')
    // the client the user was signing in to
    .addColumn('client_id', 'text')
    .addColumn('ip', 'text')
    .addColumn('user_agent', 'text')
    // failed: this attempt's number in the account's run of attempts since its last success
    .addColumn('failures', 'integer')
    // throttled: the Retry-After given (s); failed: the block this failure started, if it did
    .addColumn('retry_after', 'integer')
    .execute();
  await db.schema.createIndex('login_events_by_time').on('login_events').columns(['at', 'id']).execute();
  await db.schema.createIndex('login_events_by_username').on('login_events').columns(['username', 'at', 'id']).execute();
  await db.schema.createIndex('login_events_by_ip').on('login_events').columns(['ip', 'at', 'id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('login_events').execute();
  await db.schema.dropTable('rate_limits').execute();
}
