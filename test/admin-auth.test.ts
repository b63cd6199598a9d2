import { applyDocument, parseDocument } from '../src/admin/document.ts';
import { signIn, tokenRequest } from './helpers/browser.ts';
import { ADMIN_CLI, adminClient, clientToken } from './helpers/admin.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
const OPEN_CC = { id: 'open-cc', secret: 'open-cc-secret-0123456789' };

beforeAll(async () => {
  idjag = await startTestServer();
  // A client_credentials client with no `scope` in its metadata: the provider lets it ask for any scope it
  // knows, admin included, so the token alone must not be enough.
  await applyDocument(idjag.database.db, parseDocument({
    clients: [{
      client_id: OPEN_CC.id, client_secret: OPEN_CC.secret, token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
    }],
  }));
});
afterAll(() => idjag.dispose());

test('the seeded admin client gets a token from /token with scope admin (no resource indicator) and the API accepts it', async () => {
  const res = await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, ADMIN_CLI);
  expect(res.status).toBe(200);
  expect(res.body).toMatchObject({ token_type: 'Bearer', scope: 'admin', expires_in: expect.any(Number) });
  // opaque, not a JWT: looked up in the provider's store on every call
  expect(res.body.access_token.split('.')).toHaveLength(1);

  // with a resource indicator the provider refuses: it knows no resource server besides itself
  const withResource = await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin', resource: 'https://idjag.example/admin/api' }, ADMIN_CLI);
  expect(withResource.status).toBe(400);
  expect(withResource.body.error).toBe('invalid_target');

  const me = await adminClient(idjag.url, res.body.access_token).get('/whoami');
  expect(me.status).toBe(200);
  expect(me.headers.get('cache-control')).toBe('no-store');
  expect(me.body).toMatchObject({ actor: 'client:idjag-admin-cli', client_id: 'idjag-admin-cli', scope: 'admin' });
});

test('discovery lists the admin scope', async () => {
  const meta = await (await fetch(`${idjag.url}/.well-known/openid-configuration`)).json() as { scopes_supported: string[] };
  expect(meta.scopes_supported).toContain('admin');
});

test('no token: 401 with a Bearer challenge and no error code (RFC 6750 §3.1)', async () => {
  for (const path of ['/rules', '/export', '/nothing-here']) {
    const res = await adminClient(idjag.url, undefined).get(path);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="idjag-admin", scope="admin"');
    expect(res.body.error).toBe('invalid_request');
  }
  // a write without a token is refused before its body is even read
  const post = await adminClient(idjag.url, undefined).call('POST', '/rules', '{not json');
  expect(post.status).toBe(401);
});

test('an unknown, malformed or non-Bearer token: 401 invalid_token', async () => {
  for (const authorization of ['Bearer not-a-token', 'Bearer', 'Basic aWRqYWc6eA==', `Bearer ${'x'.repeat(43)}`]) {
    const res = await fetch(`${idjag.url}/admin/api/rules`, { headers: { authorization } });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="idjag-admin", error="invalid_token"/);
    expect((await res.json() as { error: string }).error).toBe('invalid_token');
  }
});

test('a user\'s access token (authorization code flow) is not an admin token, even for an admin user', async () => {
  const { tokens } = await signIn(idjag.url, { username: 'admin', password: 'admin', scope: 'openid' });
  const res = await adminClient(idjag.url, tokens.access_token).get('/rules');
  expect(res.status).toBe(401);
  expect(res.body.error).toBe('invalid_token');
});

test('a token without the admin scope: 403 insufficient_scope', async () => {
  const token = await clientToken(idjag.url, ADMIN_CLI, null);
  const res = await adminClient(idjag.url, token).get('/rules');
  expect(res.status).toBe(403);
  expect(res.headers.get('www-authenticate')).toBe('Bearer realm="idjag-admin", error="insufficient_scope", scope="admin"');
  expect(res.body.error).toBe('insufficient_scope');
});

test('a client not granted admin gets admin into its token (no scope metadata) and is still refused with 403', async () => {
  const issued = await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, OPEN_CC);
  expect(issued.body.scope).toBe('admin');
  const res = await adminClient(idjag.url, issued.body.access_token).get('/rules');
  expect(res.status).toBe(403);
  expect(res.body).toMatchObject({ error: 'insufficient_scope', error_description: 'client open-cc is not granted the admin scope' });
});

test('removing admin from a client\'s scope, or disabling the client, shuts its live tokens out at once', async () => {
  const admin = adminClient(idjag.url, await clientToken(idjag.url));
  const created = await admin.post('/clients', {
    client_id: 'ci-bot', client_name: 'CI bot', grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'admin',
  });
  expect(created.status).toBe(201);
  const bot = { id: 'ci-bot', secret: created.body.client_secret as string };
  const botApi = adminClient(idjag.url, await clientToken(idjag.url, bot));
  expect((await botApi.get('/whoami')).body.actor).toBe('client:ci-bot');

  expect((await admin.patch('/clients/ci-bot', { scope: null })).status).toBe(200);
  expect((await botApi.get('/whoami')).status).toBe(403);

  expect((await admin.patch('/clients/ci-bot', { scope: 'admin' })).status).toBe(200);
  expect((await botApi.get('/whoami')).status).toBe(200);
  expect((await admin.post('/clients/ci-bot/disable')).status).toBe(200);
  const refused = await botApi.get('/whoami');
  expect(refused.status).toBe(401);
  expect(refused.body.error_description).toBe('client ci-bot is unknown or disabled');
});

test('a revoked token is refused', async () => {
  const token = await clientToken(idjag.url);
  const api = adminClient(idjag.url, token);
  expect((await api.get('/whoami')).status).toBe(200);
  const revoked = await fetch(`${idjag.url}/token/revocation`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${ADMIN_CLI.id}:${ADMIN_CLI.secret}`).toString('base64')}` },
    body: new URLSearchParams({ token }),
  });
  expect(revoked.status).toBe(200);
  expect((await api.get('/whoami')).status).toBe(401);
});

test('the admin API leaves the provider alone: no body parser in front of /token, and unknown admin paths are JSON 404s', async () => {
  // the token endpoint still reads its own form body after the admin middleware
  const res = await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, ADMIN_CLI);
  expect(res.status).toBe(200);
  const api = adminClient(idjag.url, await clientToken(idjag.url));
  const missing = await api.get('/no-such-thing');
  expect(missing.status).toBe(404);
  expect(missing.body.error).toBe('not_found');
  const wrongMethod = await api.call('PUT', '/rules');
  expect(wrongMethod.status).toBe(405);
  expect(wrongMethod.headers.get('allow')).toContain('GET');
  expect(wrongMethod.body.error).toBe('method_not_allowed');
});
