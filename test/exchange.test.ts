import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { signIn } from './helpers/browser.ts';
import { exchange, ID_JAG, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let alice: Awaited<ReturnType<typeof signIn>>;
let bob: Awaited<ReturnType<typeof signIn>>;

beforeAll(async () => {
  idjag = await startTestServer();
  alice = await signIn(idjag.url, { scope: 'openid email profile offline_access', prompt: 'consent' });
  bob = await signIn(idjag.url, { username: 'bob', password: 'bob' });
});
afterAll(() => idjag.dispose());

const auditRows = () => idjag.database.db.selectFrom('audit_log').selectAll().orderBy('at').orderBy('id').execute();

test('alice exchanges her ID Token for an ID-JAG that verifies against the JWKS, every claim checked', async () => {
  const before = (await auditRows()).length;
  const res = await exchange(idjag.url, alice.tokens.id_token, { scope: 'todos.read todos.write' });
  expect(res.status).toBe(200);
  expect(res.headers.get('cache-control')).toBe('no-store');
  expect(res.body).toEqual({ access_token: expect.any(String), issued_token_type: ID_JAG, token_type: 'N_A', expires_in: 300 });

  const jwks = createRemoteJWKSet(new URL(`${idjag.url}/jwks`));
  const { payload, protectedHeader } = await jwtVerify(res.body.access_token, jwks, { issuer: idjag.issuer, audience: TODO_AS, typ: 'oauth-id-jag+jwt', algorithms: ['ES256'] });
  const idToken = decodeJwt(alice.tokens.id_token);
  expect(protectedHeader).toMatchObject({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: expect.any(String) });
  expect(payload).toMatchObject({
    iss: idjag.issuer,
    sub: idToken.sub,
    aud: TODO_AS,
    client_id: 'demo-agent-at-todo',
    resource: TODO_MCP,
    scope: 'todos.read todos.write',
    email: 'alice@example.com',
    amr: ['pwd'],
    auth_time: idToken.auth_time,
  });
  expect(payload.exp! - payload.iat!).toBe(300);
  expect(payload.jti).toEqual(expect.any(String));

  const rows = await auditRows();
  expect(rows.length).toBe(before + 1);
  const row = rows.at(-1)!;
  expect(row).toMatchObject({
    decision: 'issued', reason: 'issued', client_id: 'demo-agent', sub: idToken.sub, username: 'alice',
    audience: TODO_AS, scopes_granted: 'todos.read todos.write', rule_id: 'engineering-todo', exp: payload.exp,
  });
  // one identifier names the request, its audit row and the token; the row stores it once, as its id
  expect(payload.jti).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  expect(res.headers.get('x-request-id')).toBe(payload.jti);
  expect(row).toMatchObject({ id: payload.jti, request_id: '', jti: '' });
  expect(JSON.stringify(row)).not.toContain(res.body.access_token);
  expect(JSON.stringify(row)).not.toContain(alice.tokens.id_token);
});

test('bob (sales) is denied with invalid_target, and the denial is audited', async () => {
  const before = (await auditRows()).length;
  const res = await exchange(idjag.url, bob.tokens.id_token);
  expect(res.status).toBe(400);
  expect(res.body.error).toBe('invalid_target');
  expect(res.body.access_token).toBeUndefined();
  // no policy content leaks: neither the rule nor the group that would have been allowed
  expect(res.body.error_description).not.toMatch(/engineering|engineering-todo/);
  const rows = await auditRows();
  expect(rows.length).toBe(before + 1);
  expect(rows.at(-1)).toMatchObject({ decision: 'denied', reason: 'subject_not_allowed', error: 'invalid_target', username: 'bob', jti: null });
});

test('discovery advertises the grant and the ID-JAG token type, also as RFC 8414 metadata', async () => {
  for (const path of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
    const meta = await (await fetch(`${idjag.url}${path}`)).json() as Record<string, any>;
    expect(meta.issuer).toBe(idjag.issuer);
    expect(meta.grant_types_supported).toContain('urn:ietf:params:oauth:grant-type:token-exchange');
    expect(meta.identity_chaining_requested_token_types_supported).toEqual([ID_JAG]);
    expect(meta.token_endpoint).toBe(`${idjag.issuer}/token`);
  }
});

describe('error_description detail', () => {
  test('verbose (the development default) names the failed check and the spec sections behind it', async () => {
    const res = await exchange(idjag.url, bob.tokens.id_token);
    expect(res.body.error_description).toMatch(/^this user may not use client demo-agent to reach resource https:\/\/mcp\.todo\.example\/mcp \(failed check: policy; admin policy, default deny; RFC 8693 §2\.2\.2/);
    const malformed = await exchange(idjag.url, alice.tokens.id_token, { requested_token_type: 'urn:ietf:params:oauth:token-type:access_token' });
    expect(malformed.body.error_description).toContain('(failed check: requested_token_type; draft-ietf-oauth-identity-assertion-authz-grant §4.3)');
  });

  test('minimal (the production default) says only what kind of thing failed, and which check', async () => {
    const terse = await startTestServer({ errors: 'minimal' });
    try {
      const bobThere = await signIn(terse.url, { username: 'bob', password: 'bob' });
      const res = await exchange(terse.url, bobThere.tokens.id_token);
      expect(res.body).toEqual({ error: 'invalid_target', error_description: 'the requested audience or resource is not available to this client (failed check: policy)' });
      const wrongSecret = await exchange(terse.url, bobThere.tokens.id_token, {}, { id: 'demo-agent', secret: 'wrong' });
      expect(wrongSecret.body).toEqual({ error: 'invalid_client', error_description: 'client authentication failed (failed check: client_authentication)' });
    } finally {
      await terse.dispose();
    }
  });
});
