import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { sql } from 'kysely';
import { applySeed } from '../seed/index.ts';
import { migrateToLatest, openDatabase } from '../src/db/index.ts';
import { migrations } from '../migrations/index.ts';
import { authorize, DEMO_AGENT, signIn, tokenRequest } from './helpers/browser.ts';
import { startTestServer } from './helpers/server.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

test('a restart on the same database keeps the session, the refresh token and the signing keys', async () => {
  const first = await startTestServer();
  const port = Number(new URL(first.url).port);
  const issuer = first.issuer;
  const { tokens, browser } = await signIn(first.url, { scope: 'openid offline_access', prompt: 'consent' });
  const jwksBefore = await (await fetch(`${first.url}/jwks`)).json() as { keys: { kid: string }[] };
  await first.stop();

  const second = await startTestServer({ port, issuer }, first.dir);
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
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'idjag-migrate-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  test('migrations apply to an empty database and a second run applies nothing', async () => {
    const database = openDatabase(join(dir, 'm.db'));
    try {
      const first = await migrateToLatest(database.db);
      expect(first.applied).toEqual(Object.keys(migrations));
      const second = await migrateToLatest(database.db);
      expect(second.applied).toEqual([]);
      const tables = await sql<{ name: string }>`select name from sqlite_master where type = 'table' order by name`.execute(database.db);
      expect(tables.rows.map((r) => r.name)).toEqual(expect.arrayContaining(['users', 'groups', 'group_members', 'clients', 'oidc_payloads', 'signing_keys', 'audit_log', 'policy_rules']));
      expect(database.sqlite.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(database.sqlite.pragma('foreign_keys', { simple: true })).toBe(1);
    } finally {
      await database.close();
    }
  });

  test('the seed is idempotent: applying it twice leaves the same rows', async () => {
    const database = openDatabase(join(dir, 's.db'));
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
