import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { sql } from 'kysely';
import { applySeed } from '../seed/index.ts';
import { loadConfig } from '../src/config/index.ts';
import { migrateToLatest, openDatabase } from '../src/db/index.ts';
import { migrations } from '../migrations/index.ts';
import { authorize, DEMO_AGENT, signIn, tokenRequest } from './helpers/browser.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { startTestServer } from './helpers/server.ts';

test('a restart on the same database keeps the session, the refresh token and the signing keys', async () => {
  const first = await startTestServer();
  const port = Number(new URL(first.url).port);
  const issuer = first.issuer;
  const { tokens, browser } = await signIn(first.url, { scope: 'openid offline_access', prompt: 'consent' });
  const jwksBefore = await (await fetch(`${first.url}/jwks`)).json() as { keys: { kid: string }[] };
  await first.stop();

  const second = await startTestServer({ port, issuer }, first.testDatabase);
  try {
    // the signing keys are the same ones
    const jwksAfter = await (await fetch(`${second.url}/jwks`)).json() as { keys: { kid: string }[] };
    expect(jwksAfter.keys.map((k) => k.kid).sort()).toEqual(jwksBefore.keys.map((k) => k.kid).sort());
    // the ID Token from before the restart still verifies against the JWKS served after it
    await jwtVerify(tokens.id_token, createRemoteJWKSet(new URL(`${second.url}/jwks`)), { issuer, audience: 'demo-agent' });

    // the refresh token still works
    const refreshed = await tokenRequest(second.url, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, DEMO_AGENT);
    expect(refreshed.status).toBe(200);
    expect(decodeProtectedHeader(refreshed.body.id_token).kid).toBe(decodeProtectedHeader(tokens.id_token).kid);

    // the browser session survives: no login page this time
    const again = await authorize(second.url, { browser });
    expect(again.pages.some((p) => p.body?.includes('/login"'))).toBe(false);
  } finally {
    await second.dispose();
  }
});

describe('migrations and seed', () => {
  let scratch: TestDatabase;
  beforeEach(async () => {
    scratch = await createTestDatabase('idjag-migrate');
  });
  afterEach(() => scratch.dispose());

  test('migrations apply to an empty database and a second run applies nothing', async () => {
    const database = openDatabase(scratch.location);
    try {
      const first = await migrateToLatest(database.db);
      expect(first.applied).toEqual(Object.keys(migrations));
      const second = await migrateToLatest(database.db);
      expect(second.applied).toEqual([]);
      const tables = database.dialect === 'sqlite'
        ? await sql<{ name: string }>`select name from main.sqlite_master where type = 'table' union all select name from audit.sqlite_master where type = 'table' order by name`.execute(database.db)
        : await sql<{ name: string }>`select table_name as name from information_schema.tables where table_schema = current_schema() order by 1`.execute(database.db);
      expect(tables.rows.map((r) => r.name)).toEqual(expect.arrayContaining(['users', 'groups', 'group_members', 'clients', 'oidc_payloads', 'signing_keys', 'audit_log', 'policy_rules', 'rate_limits', 'login_events']));
      if (database.dialect === 'sqlite') {
        expect(database.sqlite.pragma('journal_mode', { simple: true })).toBe('wal');
        expect(database.sqlite.pragma('audit.journal_mode', { simple: true })).toBe('wal');
        expect(database.sqlite.pragma('foreign_keys', { simple: true })).toBe(1);
      } else {
        // foreign keys are always on in PostgreSQL: a dangling reference is refused
        await expect(database.db.insertInto('group_members').values({ group_name: 'nobody', user_sub: 'nobody' }).execute()).rejects.toThrow(/foreign key/);
      }
    } finally {
      await database.close();
    }
  });

  test('bigint columns (epoch seconds and milliseconds) read back as numbers, as the code compares them', async () => {
    const database = openDatabase(scratch.location);
    try {
      await migrateToLatest(database.db);
      const at = 1_700_000_000_123;
      await database.db.insertInto('login_events').values({ id: 'e1', at, request_id: 'r', event: 'failed', reason: null, username: 'u', sub: null, client_id: null, ip: null, user_agent: null, failures: 3, retry_after: null }).execute();
      const row = await database.db.selectFrom('login_events').select(['at', 'failures']).executeTakeFirstOrThrow();
      expect(row).toStrictEqual({ at, failures: 3 });
      const counted = await database.db.selectFrom('login_events').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
      expect(typeof counted.n).toBe('number');
    } finally {
      await database.close();
    }
  });

  test('the seed is idempotent: applying it twice leaves the same rows', async () => {
    const database = openDatabase(scratch.location);
    try {
      await migrateToLatest(database.db);
      const snapshot = async () => {
        const db = database.db;
        return {
          users: await db.selectFrom('users').select(['sub', 'username', 'email', 'password_hash', 'disabled']).orderBy('username').execute(),
          members: await db.selectFrom('group_members').selectAll().orderBy('group_name').orderBy('user_sub').execute(),
          clients: await db.selectFrom('clients').select(['client_id', 'metadata', 'secret_hash', 'first_party']).orderBy('client_id').execute(),
          groups: await db.selectFrom('groups').select(['name', 'description']).orderBy('name').execute(),
        };
      };
      await applySeed(database.db, 'http://localhost:3000');
      const once = await snapshot();
      await applySeed(database.db, 'http://localhost:3000');
      expect(await snapshot()).toEqual(once);
      expect(once.users.map((u) => u.username)).toEqual(['admin', 'alice', 'bob']);
      // secrets are stored as scrypt hashes, never as given
      for (const row of [...once.users.map((u) => u.password_hash), ...once.clients.map((c) => c.secret_hash)]) {
        if (row !== null) expect(row).toMatch(/^scrypt\$/);
      }
      expect(JSON.stringify(once)).not.toContain('demo-agent-secret');
    } finally {
      await database.close();
    }
  });
});

describe('where the database is', () => {
  test('DATABASE_URL wins over DATABASE, --database over both; SQLite ./data/idjag.db without any', () => {
    const url = 'postgres://idjag:s3cret@db.internal:5432/idjag';
    expect(loadConfig([], {}).database).toBe('./data/idjag.db');
    expect(loadConfig([], { DATABASE: '/var/lib/idjag/idjag.db' }).database).toBe('/var/lib/idjag/idjag.db');
    expect(loadConfig([], { DATABASE: '/var/lib/idjag/idjag.db', DATABASE_URL: url }).database).toBe(url);
    expect(loadConfig([], { DATABASE: '/var/lib/idjag/idjag.db', DATABASE_URL: '' }).database).toBe('/var/lib/idjag/idjag.db');
    expect(loadConfig(['--database', 'postgresql://db/idjag'], { DATABASE_URL: url }).database).toBe('postgresql://db/idjag');
    expect(loadConfig(['--database', '/tmp/x.db'], { DATABASE_URL: url }).database).toBe('/tmp/x.db');
    // a postgres: location that is not a URL is refused, not taken for a file name (and the message shows no password)
    expect(() => loadConfig(['--database', 'postgres:idjag:s3cret@db'], {})).toThrow(/database: a PostgreSQL database is a URL/);
    expect(() => loadConfig(['--database', 'postgres:idjag:s3cret@db'], {})).not.toThrow(/s3cret/);
  });

  test('openDatabase picks the dialect from the location, and its location never shows a password', async () => {
    const postgres = openDatabase('postgres://idjag:s3cret@127.0.0.1:9/idjag');
    const sqlite = openDatabase(':memory:');
    const inQuery = openDatabase('postgresql://idjag@db.internal/idjag?password=s3cret&sslmode=require');
    try {
      expect(inQuery.location).not.toContain('s3cret');
      expect({ dialect: postgres.dialect, location: postgres.location }).toEqual({ dialect: 'postgres', location: 'postgres://idjag:***@127.0.0.1:9/idjag' });
      expect({ dialect: sqlite.dialect, location: sqlite.location }).toEqual({ dialect: 'sqlite', location: ':memory:' });
    } finally {
      await postgres.close();
      await sqlite.close();
      await inQuery.close();
    }
  });
});
