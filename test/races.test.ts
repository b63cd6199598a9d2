import { authorize, DEMO_AGENT, REDIRECT_URI, signIn, tokenRequest } from './helpers/browser.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
beforeAll(async () => {
  idjag = await startTestServer();
});
afterAll(() => idjag.dispose());

const CONCURRENCY = 8;

// The first check of a client secret costs a scrypt; done once here, so the racing requests below really
// arrive together instead of being spaced out by it.
beforeAll(async () => {
  await tokenRequest(idjag.url, { grant_type: 'authorization_code', code: 'warm-up', redirect_uri: REDIRECT_URI, code_verifier: 'x'.repeat(43) }, DEMO_AGENT);
});

test('consume is atomic: of two consumes of one code, the second is refused (what keeps two nodes from both winning)', async () => {
  const { db } = idjag.database;
  const adapter = idjag.host.provider.AuthorizationCode.adapter;
  await db.insertInto('oidc_payloads').values({ model: 'AuthorizationCode', id: 'race-me', payload: '{}', grant_id: null, user_code: null, uid: null, expires_at: Math.floor(Date.now() / 1000) + 60, consumed_at: null }).execute();
  const outcomes = await Promise.allSettled([adapter.consume('race-me'), adapter.consume('race-me')]);
  expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
  const refused = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected')!;
  expect(refused.reason).toMatchObject({ error: 'invalid_grant' });
  await expect(adapter.consume('never-issued')).rejects.toMatchObject({ error: 'invalid_grant' });
});

// On SQLite in one process these requests are serialized by the event loop; on PostgreSQL, or across nodes,
// they interleave, and the atomic consume above is what decides them.
test('of several requests racing to redeem one authorization code, exactly one gets tokens', async () => {
  const { code, verifier } = await authorize(idjag.url);
  const form = { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier };
  const results = await Promise.all(Array.from({ length: CONCURRENCY }, () => tokenRequest(idjag.url, form, DEMO_AGENT)));
  const won = results.filter((r) => r.status === 200);
  expect(won).toHaveLength(1);
  for (const lost of results.filter((r) => r.status !== 200)) {
    expect(lost.status).toBe(400);
    expect(lost.body.error).toBe('invalid_grant');
    expect(lost.body.access_token).toBeUndefined();
  }
});

test('refresh tokens rotate, and of several requests racing with one, exactly one wins', async () => {
  const { tokens } = await signIn(idjag.url, { scope: 'openid offline_access', prompt: 'consent' });
  const form = { grant_type: 'refresh_token', refresh_token: tokens.refresh_token };
  const results = await Promise.all(Array.from({ length: CONCURRENCY }, () => tokenRequest(idjag.url, form, DEMO_AGENT)));
  const won = results.filter((r) => r.status === 200);
  expect(won).toHaveLength(1);
  expect(won[0]!.body.refresh_token).not.toBe(tokens.refresh_token);
  for (const lost of results.filter((r) => r.status !== 200)) expect(lost.body.error).toBe('invalid_grant');
  // the old one stays dead
  expect((await tokenRequest(idjag.url, form, DEMO_AGENT)).status).toBe(400);
});

test('replaying a rotated refresh token is refused and revokes the whole grant (reuse detection)', async () => {
  const { tokens } = await signIn(idjag.url, { scope: 'openid offline_access', prompt: 'consent' });
  const first = await tokenRequest(idjag.url, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, DEMO_AGENT);
  expect(first.status).toBe(200);
  const replay = await tokenRequest(idjag.url, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, DEMO_AGENT);
  expect(replay.status).toBe(400);
  expect(replay.body.error).toBe('invalid_grant');
  // the legitimate successor dies with the family: a thief and the client cannot both go on
  const successor = await tokenRequest(idjag.url, { grant_type: 'refresh_token', refresh_token: first.body.refresh_token }, DEMO_AGENT);
  expect(successor.status).toBe(400);
});
