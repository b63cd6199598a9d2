import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { deleteExpiredPayloads } from '../src/oidc/adapter.ts';
import { loadKeySet, purgeExpiredKeys, RETIRED_KEY_RETENTION_SECONDS, rotateSigningKeys } from '../src/oidc/keys.ts';
import { signIn } from './helpers/browser.ts';
import { exchange } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
beforeAll(async () => {
  idjag = await startTestServer();
});
afterAll(() => idjag.dispose());

const jwks = async () => (await (await fetch(`${idjag.url}/jwks`)).json() as { keys: { kid: string; alg: string; d?: string }[] }).keys;

test('the JWKS publishes an RS256 ID Token key and an ES256 ID-JAG key, and no private part', async () => {
  const keys = await jwks();
  expect(keys.map((k) => k.alg).sort()).toEqual(['ES256', 'RS256']);
  for (const k of keys) expect(k.d).toBeUndefined();
  expect(JSON.stringify(keys)).not.toMatch(/"(d|p|q|dp|dq|qi)":/);
});

test('rotation: the new keys sign at once, the old ones stay published, tokens signed before still work', async () => {
  const before = await signIn(idjag.url);
  const oldKid = decodeProtectedHeader(before.tokens.id_token).kid;
  const oldJag = await exchange(idjag.url, before.tokens.id_token);
  expect(oldJag.status).toBe(200);

  const { retired, created } = await rotateSigningKeys(idjag.database.db);
  expect(retired).toHaveLength(2);
  expect(await idjag.host.refreshKeys()).toBe(true);

  const kids = (await jwks()).map((k) => k.kid);
  expect(kids).toEqual(expect.arrayContaining([...retired, ...created]));

  const after = await signIn(idjag.url);
  expect(decodeProtectedHeader(after.tokens.id_token).kid).not.toBe(oldKid);
  expect(created).toContain(decodeProtectedHeader(after.tokens.id_token).kid);

  // an ID Token signed by the retired key is still a valid subject token, and the new ID-JAG uses the new key
  const jag = await exchange(idjag.url, before.tokens.id_token);
  expect(jag.status).toBe(200);
  expect(created).toContain(decodeProtectedHeader(jag.body.access_token).kid);
  const set = createRemoteJWKSet(new URL(`${idjag.url}/jwks`));
  await jwtVerify(oldJag.body.access_token, set, { issuer: idjag.issuer });
  await jwtVerify(jag.body.access_token, set, { issuer: idjag.issuer });

  // a retired key leaves the JWKS once everything it signed has expired
  const later = Math.floor(Date.now() / 1000) + RETIRED_KEY_RETENTION_SECONDS + 1;
  expect((await loadKeySet(idjag.database.db, later)).keys.map((k) => k.kid).sort()).toEqual([...created].sort());
  expect(await purgeExpiredKeys(idjag.database.db, later)).toBe(2);
});

test('expired provider rows are ignored and cleaned up', async () => {
  const { db } = idjag.database;
  await db.insertInto('oidc_payloads').values({ model: 'Session', id: 'stale', payload: '{}', grant_id: null, user_code: null, uid: 'stale-uid', expires_at: 1, consumed_at: null }).execute();
  expect(await idjag.host.provider.Session.adapter.find('stale')).toBeUndefined();
  expect(await deleteExpiredPayloads(db)).toBeGreaterThanOrEqual(1);
  expect(await db.selectFrom('oidc_payloads').select('id').where('id', '=', 'stale').executeTakeFirst()).toBeUndefined();
});
