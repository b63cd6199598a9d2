/**
 * One real HTTP request per row of the token exchange's error table (README, docs/protocol.md) (and then some): the status, the OAuth error, a
 * description a client author can act on, no token in the body, and exactly one audit row that names the
 * failed check.
 */
import { createPublicKey, randomUUID, type JsonWebKey } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, generateKeyPair, importJWK, SignJWT, type JWK, type JWTPayload } from 'jose';
import { authorize, REDIRECT_URI, signIn, tokenRequest, type TokenResponse } from './helpers/browser.ts';
import { exchange, ID_JAG, ID_TOKEN, REFRESH_TOKEN, TODO_ADMIN_MCP, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { auditCount as countAudit, lastAuditRows as lastRows } from './helpers/audit.ts';
import { decodeChecks, decodeTokenType } from '../src/audit/codec.ts';

const PARTNER = { id: 'partner-app', secret: 'partner-app-secret' };
const SAML2 = 'urn:ietf:params:oauth:token-type:saml2';

let idjag: TestServer;
let alice: Awaited<ReturnType<typeof signIn>>;
/** partner-app's tokens for alice: an ID Token whose aud is partner-app, and a refresh token of partner-app */
let partner: TokenResponse['body'];
/** the active ID Token signing key, private, from the database */
let idTokenKey: { kid: string; jwk: JWK };

beforeAll(async () => {
  idjag = await startTestServer();
  alice = await signIn(idjag.url, { scope: 'openid email profile offline_access', prompt: 'consent' });
  const third = await authorize(idjag.url, { clientId: 'partner-app', scope: 'openid email offline_access', prompt: 'consent' });
  const res = await tokenRequest(idjag.url, { grant_type: 'authorization_code', code: third.code, redirect_uri: REDIRECT_URI, code_verifier: third.verifier }, PARTNER);
  if (res.status !== 200) throw new Error(`partner-app code exchange failed: ${JSON.stringify(res.body)}`);
  partner = res.body;
  const row = await idjag.database.db.selectFrom('signing_keys').select(['kid', 'private_jwk', 'alg'])
    .where('purpose', '=', 'id_token').where('retired_at', 'is', null).executeTakeFirstOrThrow();
  expect(row.alg).toBe('RS256');
  idTokenKey = { kid: row.kid, jwk: JSON.parse(row.private_jwk) as JWK };
});
afterAll(() => idjag.dispose());

const db = () => idjag.database.db;
const auditCount = () => countAudit(idjag);
const lastAuditRows = (n: number) => lastRows(idjag, n);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const nowSec = () => Math.floor(Date.now() / 1000);

interface Expected {
  status?: number;
  error: string;
  /** a fragment of error_description that tells the client author what to fix */
  description: RegExp;
  /** the check the audit row must show failed */
  check: string;
  clientId?: string | null;
  /** checks before the failed one that never ran (the provider refused before them); all others must have passed */
  notReached?: string[];
}

/**
 * Sends one request and checks the answer and its audit trail: exactly one new row, decision denied, the
 * same error, and one failed check, the expected one, every check before it passed and every check after it
 * not reached.
 */
async function expectDenied(send: () => Promise<TokenResponse>, want: Expected, secrets: string[] = []): Promise<TokenResponse> {
  const before = await auditCount();
  const res = await send();
  expect({ status: res.status, error: res.body.error }).toEqual({ status: want.status ?? 400, error: want.error });
  expect(res.body.error_description).toEqual(expect.any(String));
  expect(res.body.error_description).toMatch(want.description);
  expect(res.body).not.toHaveProperty('access_token');
  expect(res.body).not.toHaveProperty('issued_token_type');
  expect(res.headers.get('cache-control')).toBe('no-store');

  expect(await auditCount()).toBe(before + 1);
  const [row] = await lastAuditRows(1);
  expect(row).toMatchObject({ decision: 'denied', error: want.error, jti: null, exp: null });
  if (want.clientId !== undefined) expect(row!.client_id).toBe(want.clientId);
  const checks = decodeChecks(row!.checks);
  const failed = checks.filter((c) => c.status === 'failed');
  expect(failed.map((c) => c.name)).toEqual([want.check]);
  const at = checks.findIndex((c) => c.status === 'failed');
  expect(checks.slice(0, at).filter((c) => c.status !== 'passed').map((c) => c.name)).toEqual(want.notReached ?? []);
  for (const name of want.notReached ?? []) expect(checks.find((c) => c.name === name)?.status).toBe('not_reached');
  expect(checks.slice(at + 1).filter((c) => c.status !== 'not_reached').map((c) => c.name)).toEqual([]);
  // the audit row never stores a token
  for (const s of secrets) expect(JSON.stringify(row)).not.toContain(s);
  return res;
}

/** A token signed with the real ID Token key (or another), with the real token's header unless told otherwise. */
async function sign(claims: JWTPayload, opts: { key?: Parameters<SignJWT['sign']>[0]; header?: Record<string, unknown> } = {}): Promise<string> {
  const key = opts.key ?? await importJWK(idTokenKey.jwk, 'RS256');
  const header = { ...decodeProtectedHeader(alice.tokens.id_token), ...opts.header };
  return new SignJWT(claims).setProtectedHeader(header as never).sign(key);
}

const aliceClaims = () => decodeJwt(alice.tokens.id_token);

describe('the request (invalid_request)', () => {
  test.each([
    ['a wrong requested_token_type', { requested_token_type: 'urn:ietf:params:oauth:token-type:access_token' }, 'requested_token_type', /requested_token_type urn:ietf:params:oauth:token-type:access_token is not supported.*id-jag/],
    ['no requested_token_type', { requested_token_type: undefined }, 'requested_token_type', /requested_token_type is required.*id-jag/],
    ['an unknown subject_token_type', { subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' }, 'subject_token_type', /subject_token_type urn:ietf:params:oauth:token-type:access_token is not supported.*id_token/],
    ['the saml2 subject_token_type', { subject_token_type: SAML2 }, 'subject_token_type', /saml2 is not supported by this IdP/],
    ['no subject_token_type', { subject_token_type: undefined }, 'subject_token_type', /subject_token_type is required/],
    ['no audience', { audience: undefined }, 'audience_present', /audience is required/],
    ['no subject_token', { subject_token: undefined }, 'subject_token_present', /subject_token is required/],
    ['an actor_token without actor_token_type', { actor_token: 'x' }, 'actor_token', /actor_token_type is required when actor_token is sent/],
  ] as const)('%s is invalid_request', async (_name, over, check, description) => {
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, over), { error: 'invalid_request', check, description, clientId: 'demo-agent' }, [alice.tokens.id_token]);
  });

  test.each([
    ['audience', [TODO_AS, TODO_AS]],
    ['audience', [TODO_AS, 'urn:example:todo']],
    ['subject_token_type', [ID_TOKEN, ID_TOKEN]],
    ['requested_token_type', [ID_JAG, ID_JAG]],
  ] as const)('a repeated %s parameter is invalid_request, refused by the provider and still audited', async (param, values) => {
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { [param]: [...values] }),
      { error: 'invalid_request', check: 'request_syntax', description: new RegExp(`'${param}' parameter must not be provided twice`), clientId: 'demo-agent' }, [alice.tokens.id_token]);
  });

  test('authorization_details of a type no rule allows is invalid_authorization_details (RFC 9396 §5)', async () => {
    const details = JSON.stringify([{ type: 'todo', actions: ['read'] }]);
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { authorization_details: details }),
      { error: 'invalid_authorization_details', check: 'authorization_details.types', description: /none of the requested authorization_details types \(todo\) may be granted/ });
  });

  test('a scope with characters outside RFC 6749 §3.3 is refused by the provider (invalid_scope) and audited', async () => {
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { scope: 'todos"read' }),
      { error: 'invalid_scope', check: 'request_syntax', description: /scope contains invalid characters/, clientId: 'demo-agent' });
  });

  test('a repeated resource is not an error (RFC 8707 lets it repeat)', async () => {
    const res = await exchange(idjag.url, alice.tokens.id_token, { resource: [TODO_MCP, TODO_MCP] });
    expect(res.status).toBe(200);
    expect(decodeJwt(res.body.access_token).resource).toBe(TODO_MCP);
  });
});

describe('the client', () => {
  test.each([
    ['a wrong client secret', { id: 'demo-agent', secret: 'wrong-secret' }, {}],
    ['an unknown client', { id: 'nobody', secret: 'wrong-secret' }, {}],
    ['a wrong client secret with a repeated parameter (authentication comes first)', { id: 'demo-agent', secret: 'wrong-secret' }, { audience: [TODO_AS, TODO_AS] }],
  ])('%s is invalid_client (401), audited by the middleware', async (_name, auth, over) => {
    const res = await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, over, auth),
      { status: 401, error: 'invalid_client', check: 'client_authentication', description: /client authentication failed/ }, [alice.tokens.id_token, 'wrong-secret']);
    expect(res.headers.get('www-authenticate')).toMatch(/^Basic/);
  });

  test('no client authentication at all is invalid_client (401), as RFC 6749 §5.2 lists it', async () => {
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, {}, null),
      { status: 401, error: 'invalid_client', check: 'client_authentication', description: /client authentication is required/, clientId: null }, [alice.tokens.id_token]);
  });

  test('a public client (auth method none) is unauthorized_client', async () => {
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { client_id: 'demo-public' }, null),
      { error: 'unauthorized_client', check: 'confidential_client', description: /demo-public is a public client/, clientId: 'demo-public' }, [alice.tokens.id_token]);
  });

  test('a confidential client not registered for token exchange is unauthorized_client', async () => {
    await expectDenied(() => exchange(idjag.url, partner.id_token, {}, PARTNER),
      { error: 'unauthorized_client', check: 'grant_type_allowed', description: /partner-app is not registered for the grant type urn:ietf:params:oauth:grant-type:token-exchange/, clientId: 'partner-app' }, [partner.id_token]);
  });
});

describe('the ID Token (invalid_grant)', () => {
  test('alice\'s real ID Token works (the baseline the forgeries below differ from)', async () => {
    const res = await exchange(idjag.url, alice.tokens.id_token);
    expect(res.status).toBe(200);
    // and so does one re-signed with the real key and the same claims: the forgeries fail for what they change
    const copy = await sign(aliceClaims());
    expect((await exchange(idjag.url, copy)).status).toBe(200);
  });

  test('an expired ID Token (beyond the 15 s skew)', async () => {
    const t = nowSec();
    const token = await sign({ ...aliceClaims(), iat: t - 3600, auth_time: t - 3600, exp: t - 60 });
    await expectDenied(() => exchange(idjag.url, token), { error: 'invalid_grant', check: 'id_token.expiry', description: /subject_token expired at .*sign the user in again/, clientId: 'demo-agent' }, [token]);
  });

  test('an ID Token issued to another client names the client', async () => {
    expect(decodeJwt(partner.id_token).aud).toBe('partner-app');
    await expectDenied(() => exchange(idjag.url, partner.id_token),
      { error: 'invalid_grant', check: 'id_token.audience', description: /audience does not include client demo-agent/, clientId: 'demo-agent' }, [partner.id_token]);
  });

  test('a forged signature: one character of the real signature changed', async () => {
    const [h, p, s] = alice.tokens.id_token.split('.') as [string, string, string];
    const i = Math.floor(s.length / 2);
    const forged = `${h}.${p}.${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`;
    await expectDenied(() => exchange(idjag.url, forged),
      { error: 'invalid_grant', check: 'id_token.signature', description: /signature does not verify/ }, [forged]);
  });

  test('a forged signature: a fresh RSA key under the real kid', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const forged = await sign(aliceClaims(), { key: privateKey });
    expect(decodeProtectedHeader(forged).kid).toBe(idTokenKey.kid);
    await expectDenied(() => exchange(idjag.url, forged),
      { error: 'invalid_grant', check: 'id_token.signature', description: /signature does not verify/ }, [forged]);
  });

  test('alg none, unsigned', async () => {
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const unsigned = `${enc({ alg: 'none', typ: 'JWT' })}.${enc(aliceClaims())}.`;
    await expectDenied(() => exchange(idjag.url, unsigned),
      { error: 'invalid_grant', check: 'id_token.algorithm', description: /unsigned \(alg none\)/ }, [unsigned]);
  });

  test('the real header and payload with the signature removed', async () => {
    const [h, p] = alice.tokens.id_token.split('.') as [string, string];
    const stripped = `${h}.${p}.`;
    await expectDenied(() => exchange(idjag.url, stripped),
      { error: 'invalid_grant', check: 'id_token.signature', description: /signature does not verify/ }, [stripped]);
  });

  test('HS256 with the public key as the HMAC secret', async () => {
    // the key as anyone can get it: from the published JWKS
    const jwks = await (await fetch(`${idjag.url}/jwks`)).json() as { keys: JWK[] };
    const publicJwk = jwks.keys.find((k) => k.kid === idTokenKey.kid)!;
    expect(publicJwk).toMatchObject({ kty: 'RSA', alg: 'RS256' });
    const pemText = createPublicKey({ key: publicJwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string;
    for (const secret of [new TextEncoder().encode(pemText), new TextEncoder().encode(JSON.stringify(publicJwk))]) {
      const forged = await sign(aliceClaims(), { key: secret, header: { alg: 'HS256' } });
      await expectDenied(() => exchange(idjag.url, forged),
        { error: 'invalid_grant', check: 'id_token.algorithm', description: /signed with HS256; this IdP signs ID Tokens with RS256 only/ }, [forged]);
    }
  });

  test('an ID-JAG presented as an ID Token', async () => {
    const issued = await exchange(idjag.url, alice.tokens.id_token);
    expect(issued.status).toBe(200);
    const jag = issued.body.access_token as string;
    await expectDenied(() => exchange(idjag.url, jag),
      { error: 'invalid_grant', check: 'id_token.format', description: /typ oauth-id-jag\+jwt; an ID Token is expected/ }, [jag]);
  });

  test('an ID-JAG with its typ header removed still fails, on its algorithm (ES256)', async () => {
    const issued = await exchange(idjag.url, alice.tokens.id_token);
    const [, p, s] = (issued.body.access_token as string).split('.') as [string, string, string];
    const header = Buffer.from(JSON.stringify({ ...decodeProtectedHeader(issued.body.access_token), typ: undefined })).toString('base64url');
    const stripped = `${header}.${p}.${s}`;
    await expectDenied(() => exchange(idjag.url, stripped),
      { error: 'invalid_grant', check: 'id_token.algorithm', description: /signed with ES256/ }, [stripped]);
  });

  test('an ID Token from another issuer, signed with the real key', async () => {
    const token = await sign({ ...aliceClaims(), iss: 'https://evil.example' });
    await expectDenied(() => exchange(idjag.url, token),
      { error: 'invalid_grant', check: 'id_token.issuer', description: /issued by "https:\/\/evil.example", not by this IdP/ }, [token]);
  });

  test('an unknown kid', async () => {
    const token = await sign(aliceClaims(), { header: { kid: 'no-such-key' } });
    await expectDenied(() => exchange(idjag.url, token),
      { error: 'invalid_grant', check: 'id_token.key', description: /signed with key no-such-key, which this IdP does not publish/ }, [token]);
  });

  test('an iat in the future', async () => {
    const t = nowSec();
    const token = await sign({ ...aliceClaims(), iat: t + 600, exp: t + 3600 });
    await expectDenied(() => exchange(idjag.url, token),
      { error: 'invalid_grant', check: 'id_token.issued_at', description: /iat .* is in the future/ }, [token]);
  });

  test('not a JWT at all', async () => {
    await expectDenied(() => exchange(idjag.url, 'not-a-jwt'),
      { error: 'invalid_grant', check: 'id_token.format', description: /not a JWT/ });
  });

  test('a user disabled after she got her ID Token', async () => {
    await db().updateTable('users').set({ disabled: 1 }).where('username', '=', 'alice').execute();
    try {
      await expectDenied(() => exchange(idjag.url, alice.tokens.id_token),
        { error: 'invalid_grant', check: 'user', description: /user is disabled/, clientId: 'demo-agent' }, [alice.tokens.id_token]);
    } finally {
      await db().updateTable('users').set({ disabled: 0 }).where('username', '=', 'alice').execute();
    }
    expect((await exchange(idjag.url, alice.tokens.id_token)).status).toBe(200);
  });

  test('a user who no longer exists', async () => {
    const token = await sign({ ...aliceClaims(), sub: 'no-such-user' });
    await expectDenied(() => exchange(idjag.url, token),
      { error: 'invalid_grant', check: 'user', description: /user no longer exists/ }, [token]);
  });
});

describe('the refresh token as subject', () => {
  test('demo-agent\'s own refresh token is exchanged for an ID-JAG', async () => {
    expect(alice.tokens.refresh_token).toEqual(expect.any(String));
    const before = await auditCount();
    const res = await exchange(idjag.url, alice.tokens.refresh_token, { subject_token_type: REFRESH_TOKEN });
    expect(res.status).toBe(200);
    expect(res.body.issued_token_type).toBe(ID_JAG);
    const claims = decodeJwt(res.body.access_token);
    expect(claims).toMatchObject({ sub: aliceClaims().sub, aud: TODO_AS, resource: TODO_MCP, client_id: 'demo-agent-at-todo' });
    expect(await auditCount()).toBe(before + 1);
    const [row] = await lastAuditRows(1);
    // the row's id is the jti, stored once (src/audit/codec.ts, encodeOwnId)
    expect(row).toMatchObject({ decision: 'issued', id: claims.jti, jti: '' });
    expect(decodeTokenType(row!.subject_token_type)).toBe(REFRESH_TOKEN);
    expect(JSON.stringify(row)).not.toContain(alice.tokens.refresh_token);
    // the exchange reads the refresh token; it does not consume it
    expect((await exchange(idjag.url, alice.tokens.refresh_token, { subject_token_type: REFRESH_TOKEN })).status).toBe(200);
  });

  test('another client\'s refresh token (partner-app\'s, presented by demo-agent) is invalid_grant', async () => {
    expect(partner.refresh_token).toEqual(expect.any(String));
    await expectDenied(() => exchange(idjag.url, partner.refresh_token, { subject_token_type: REFRESH_TOKEN }),
      { error: 'invalid_grant', check: 'refresh_token', description: /not a live refresh token issued to client demo-agent/, clientId: 'demo-agent' }, [partner.refresh_token]);
  });

  test('an unknown refresh token is invalid_grant', async () => {
    await expectDenied(() => exchange(idjag.url, 'no-such-refresh-token', { subject_token_type: REFRESH_TOKEN }),
      { error: 'invalid_grant', check: 'refresh_token', description: /not a live refresh token issued to client demo-agent/ });
  });

  test('an ID Token sent as a refresh token is invalid_grant', async () => {
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { subject_token_type: REFRESH_TOKEN }),
      { error: 'invalid_grant', check: 'refresh_token', description: /not a live refresh token issued to client demo-agent/ }, [alice.tokens.id_token]);
  });

  test('not yours, unknown, expired, revoked: the presenting client is told exactly the same; the audit log says which', async () => {
    const fresh = await signIn(idjag.url, { scope: 'openid offline_access', prompt: 'consent' });
    const expired = await signIn(idjag.url, { scope: 'openid offline_access', prompt: 'consent' });
    // expire one refresh token in place (an opaque token's value is its id), revoke another at the revocation endpoint
    const stored = await db().selectFrom('oidc_payloads').select('payload').where('model', '=', 'RefreshToken').where('id', '=', expired.tokens.refresh_token).executeTakeFirstOrThrow();
    const payload = JSON.parse(stored.payload) as { exp: number };
    await db().updateTable('oidc_payloads').set({ payload: JSON.stringify({ ...payload, exp: nowSec() - 3600 }) })
      .where('model', '=', 'RefreshToken').where('id', '=', expired.tokens.refresh_token).execute();
    const revoked = await fetch(`${idjag.url}/token/revocation`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('demo-agent:demo-agent-secret').toString('base64')}` },
      body: new URLSearchParams({ token: fresh.tokens.refresh_token, token_type_hint: 'refresh_token' }),
    });
    expect(revoked.status).toBe(200);

    const cases = { 'not yours': partner.refresh_token, unknown: 'no-such-refresh-token', expired: expired.tokens.refresh_token, revoked: fresh.tokens.refresh_token };
    const answers: Record<string, unknown> = {};
    const explanations: Record<string, string> = {};
    for (const [name, token] of Object.entries(cases)) {
      const res = await exchange(idjag.url, token, { subject_token_type: REFRESH_TOKEN });
      answers[name] = { status: res.status, body: res.body };
      const [audit] = await lastAuditRows(1);
      explanations[name] = audit!.explanation!;
    }
    const first = answers['not yours'];
    expect(first).toEqual({ status: 400, body: { error: 'invalid_grant', error_description: expect.stringMatching(/^subject_token is not a live refresh token issued to client demo-agent \(failed check: refresh_token;/) } });
    for (const answer of Object.values(answers)) expect(answer).toEqual(first);
    expect(explanations).toEqual({
      'not yours': 'refresh token of client partner-app, presented by demo-agent',
      unknown: 'no such refresh token (never issued, revoked or deleted)',
      expired: expect.stringMatching(/^refresh token expired at /),
      revoked: 'no such refresh token (never issued, revoked or deleted)',
    });
  });

  test('a rotated refresh token replayed as subject_token revokes its grant, as at grant_type=refresh_token (reuse detection)', async () => {
    const bob = await signIn(idjag.url, { username: 'bob', password: 'bob', scope: 'openid offline_access', prompt: 'consent' });
    const rotated = await tokenRequest(idjag.url, { grant_type: 'refresh_token', refresh_token: bob.tokens.refresh_token }, { id: 'demo-agent', secret: 'demo-agent-secret' });
    expect(rotated.status).toBe(200);
    const newest = rotated.body.refresh_token as string;
    expect(newest).not.toBe(bob.tokens.refresh_token);

    // the replay of the old one is refused, and the audit log says why
    const replay = await exchange(idjag.url, bob.tokens.refresh_token, { subject_token_type: REFRESH_TOKEN });
    expect([replay.status, replay.body.error]).toEqual([400, 'invalid_grant']);
    const [row] = await lastAuditRows(1);
    expect(row!.explanation).toMatch(/^refresh token already rotated and presented again: grant \S+ revoked \(reuse detection\)$/);

    // and the grant is gone: the newest refresh token no longer works, for an exchange or a refresh
    const after = await exchange(idjag.url, newest, { subject_token_type: REFRESH_TOKEN });
    expect([after.status, after.body.error]).toEqual([400, 'invalid_grant']);
    const refresh = await tokenRequest(idjag.url, { grant_type: 'refresh_token', refresh_token: newest }, { id: 'demo-agent', secret: 'demo-agent-secret' });
    expect([refresh.status, refresh.body.error]).toEqual([400, 'invalid_grant']);
  });
});

describe('the target (invalid_target) and the scope (invalid_scope)', () => {
  test('an unknown audience', async () => {
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { audience: 'https://auth.unknown.example' }),
      { error: 'invalid_target', check: 'audience', description: /audience https:\/\/auth.unknown.example is not a Resource AS known to this IdP/ });
  });

  test('a resource that is not an MCP server known to this IdP', async () => {
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { resource: 'https://other.example/mcp' }),
      { error: 'invalid_target', check: 'resource', description: /resource https:\/\/other.example\/mcp is not an MCP server known/ });
  });

  test('a resource that is not an absolute URI', async () => {
    await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { resource: 'mcp.todo.example/mcp' }),
      { error: 'invalid_target', check: 'resource', description: /not an absolute URI/ });
  });

  test('a resource served by another Resource AS than the audience', async () => {
    const t = nowSec();
    await db().insertInto('resource_servers').values({ id: 'rs-other', issuer: 'https://auth.other.example', name: 'Other AS', enabled: 1, created_at: t, updated_at: t, released_claims: '[]', aud_tenant: null, sub_id_format: null }).execute();
    await db().insertInto('mcp_servers').values({ id: 'mcp-other', resource: 'https://mcp.other.example/mcp', name: 'Other MCP', resource_server_id: 'rs-other', scopes: '["x.read"]', enabled: 1, created_at: t, updated_at: t }).execute();
    try {
      await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { resource: 'https://mcp.other.example/mcp' }),
        { error: 'invalid_target', check: 'resource', description: /resource https:\/\/mcp.other.example\/mcp is not served by audience https:\/\/auth.todo.example/ });
      // and the other way round: the todo MCP server with the other AS as the audience
      await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { audience: 'https://auth.other.example' }),
        { error: 'invalid_target', check: 'resource', description: /resource https:\/\/mcp.todo.example\/mcp is not served by audience https:\/\/auth.other.example/ });
    } finally {
      await db().deleteFrom('mcp_servers').where('id', '=', 'mcp-other').execute();
      await db().deleteFrom('resource_servers').where('id', '=', 'rs-other').execute();
    }
  });

  test('no rule for the target (the seeded admin MCP server), without disclosing the policy', async () => {
    const res = await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { resource: TODO_ADMIN_MCP }),
      { error: 'invalid_target', check: 'policy', description: /client demo-agent is not allowed to obtain an ID-JAG for resource https:\/\/mcp.todo.example\/admin/ });
    expect(res.body.error_description).not.toMatch(/engineering|rule/);
    const [row] = await lastAuditRows(1);
    expect(row!.reason).toBe('no_rule');
  });

  test.each([
    ['a scope the MCP server defines but the rule does not grant', 'todos.admin'],
    ['a scope nobody defines', 'todos.delete'],
  ])('%s is invalid_scope', async (_name, scope) => {
    const res = await expectDenied(() => exchange(idjag.url, alice.tokens.id_token, { scope }),
      { error: 'invalid_scope', check: 'scope', description: new RegExp(`none of the requested scopes \\(${scope}\\) may be granted`) });
    expect(res.body.error_description).not.toMatch(/engineering|todos\.read|todos\.write/);
  });

  test('hundreds of resources: refused, and audited with every one of them (no index entry may be too long for the row)', async () => {
    // random names: PostgreSQL compresses a long index entry, and a repetitive list would fit compressed
    const resources = Array.from({ length: 300 }, () => `https://${randomUUID()}.example/mcp`);
    const before = await auditCount();
    const res = await exchange(idjag.url, alice.tokens.id_token, { resource: resources });
    expect(res.status).toBe(400);
    expect(res.body).not.toHaveProperty('access_token');
    expect(await auditCount()).toBe(before + 1);
    const [row] = await lastAuditRows(1);
    expect({ decision: row!.decision, resources: JSON.parse(row!.resources!) }).toEqual({ decision: 'denied', resources });
  });

  test('a granted subset is not an error: the response names the scope', async () => {
    const res = await exchange(idjag.url, alice.tokens.id_token, { scope: 'todos.read todos.admin' });
    expect(res.status).toBe(200);
    expect(res.body.scope).toBe('todos.read');
  });
});

describe('step-up (insufficient_user_authentication)', () => {
  test('a rule with max_auth_age 0 and a login older than a second: max_age in the body', async () => {
    const rule = await db().selectFrom('policy_rules').select('max_auth_age').where('id', '=', 'engineering-todo').executeTakeFirstOrThrow();
    await db().updateTable('policy_rules').set({ max_auth_age: 0 }).where('id', '=', 'engineering-todo').execute();
    try {
      const authTime = aliceClaims().auth_time as number;
      const wait = (authTime + 2) * 1000 - Date.now();
      if (wait > 0) await sleep(wait);
      const res = await expectDenied(() => exchange(idjag.url, alice.tokens.id_token),
        { error: 'insufficient_user_authentication', check: 'step_up', description: /must sign in again \(max_age=0\)/, clientId: 'demo-agent' }, [alice.tokens.id_token]);
      expect(res.body.max_age).toBe(0);
    } finally {
      await db().updateTable('policy_rules').set({ max_auth_age: rule.max_auth_age }).where('id', '=', 'engineering-todo').execute();
    }
    expect((await exchange(idjag.url, alice.tokens.id_token)).status).toBe(200);
  });
});
