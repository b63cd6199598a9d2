// The demo MCP server (src/demo/mcp-server.ts) as idjag serves it under /demo/mcp: its RFC 9728 metadata, the
// bearer-token gate (RFC 6750 / RFC 9068 checks, each refusal with a WWW-Authenticate challenge that names the
// protected resource metadata) and the per-tool scopes. Tokens come from the real chain where they can
// (IdP token exchange, then the demo AS's JWT-bearer grant), and are minted with the demo AS's own key for
// the variants the AS would never issue.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { decodeJwt, generateKeyPair, importJWK, SignJWT, type JWK, type JWTPayload } from 'jose';
import { loadConfig } from '../src/config/index.ts';
import { demoMcpServer } from '../src/demo/mcp-server.ts';
import { DPOP_ALGS } from '../src/dpop/proof.ts';
import { DEMO_KEY_SETTING } from '../src/demo/store.ts';
import { basic, signIn } from './helpers/browser.ts';
import { exchange } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const AGENT_AT_AS = { id: 'demo-agent-at-todo', secret: 'demo-agent-at-todo-secret' };
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

let idjag: TestServer;
let alice: Awaited<ReturnType<typeof signIn>>;
let asIssuer: string;
let mcp: string;
let metadataUrl: string;
let asKey: { kid: string; key: Awaited<ReturnType<typeof importJWK>> };

beforeAll(async () => {
  idjag = await startTestServer();
  asIssuer = `${idjag.issuer}/demo/as`;
  mcp = `${idjag.issuer}/demo/mcp`;
  metadataUrl = `${idjag.issuer}/.well-known/oauth-protected-resource/demo/mcp`;
  alice = await signIn(idjag.url);
  await accessToken('todos.read'); // makes the demo AS create its signing key
  const row = await idjag.database.db.selectFrom('settings').select('value').where('key', '=', DEMO_KEY_SETTING).executeTakeFirstOrThrow();
  const jwk = JSON.parse(row.value) as JWK & { kid: string };
  asKey = { kid: jwk.kid, key: await importJWK(jwk, 'ES256') };
});
afterAll(() => idjag.dispose());

/** Steps 2 and 3 by hand: alice's ID Token → ID-JAG at the IdP → access token at the demo AS. */
async function accessToken(scope: string): Promise<string> {
  const jag = await exchange(idjag.url, alice.tokens.id_token, { audience: asIssuer, resource: mcp, scope });
  if (jag.status !== 200) throw new Error(`token exchange failed: ${JSON.stringify(jag.body)}`);
  const res = await fetch(`${asIssuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(AGENT_AT_AS.id, AGENT_AT_AS.secret) },
    body: new URLSearchParams({ grant_type: JWT_BEARER, assertion: jag.body.access_token as string, resource: mcp }),
  });
  const body = await res.json() as Record<string, string>;
  if (res.status !== 200) throw new Error(`jwt-bearer grant failed: ${JSON.stringify(body)}`);
  return body.access_token!;
}

const now = () => Math.floor(Date.now() / 1000);

/** An access token as the demo AS would sign it, with `over` replacing claims (undefined removes one). */
async function mintAccessToken(over: Record<string, unknown> = {}, header: Record<string, unknown> = {}, key: Parameters<SignJWT['sign']>[0] = asKey.key): Promise<string> {
  const t = now();
  const claims: JWTPayload = {
    iss: asIssuer, sub: decodeJwt(alice.tokens.id_token).sub, aud: mcp, client_id: AGENT_AT_AS.id, scope: 'todos.read todos.write',
    email: 'alice@example.com', jti: randomUUID(), iat: t, exp: t + 600, ...over,
  };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: asKey.kid, ...header } as never).sign(key);
}

interface McpAnswer {
  status: number;
  challenge: string | null;
  body: any;
}

/** One JSON-RPC request to the MCP server, as a 2025-era stateless client sends it. */
async function rpc(method: string, params: Record<string, unknown>, authorization?: string, extra: Record<string, string> = {}): Promise<McpAnswer> {
  const res = await fetch(mcp, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-11-25',
      ...(authorization ? { authorization } : {}),
      ...extra,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const text = await res.text();
  const data = text.split('\n').find((l) => l.startsWith('data:'));
  let body: unknown = text;
  try {
    body = JSON.parse(data ? data.slice(5) : text);
  } catch { /* keep the text */ }
  return { status: res.status, challenge: res.headers.get('www-authenticate'), body };
}

const callTool = (name: string, args: Record<string, unknown>, token?: string) => rpc('tools/call', { name, arguments: args }, token ? `Bearer ${token}` : undefined);

test('RFC 9728 metadata at the path-inserted well-known URL names the demo AS', async () => {
  const res = await fetch(metadataUrl);
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual({
    resource: mcp,
    authorization_servers: [asIssuer],
    scopes_supported: ['todos.read', 'todos.write'],
    bearer_methods_supported: ['header'],
    resource_name: expect.any(String),
    dpop_signing_alg_values_supported: [...DPOP_ALGS],
    dpop_bound_access_tokens_required: false,
  });
  expect((await fetch(`${idjag.issuer}/.well-known/oauth-protected-resource`)).status).toBe(404);
});

test('a real access token lists and adds todos, and the results name the caller', async () => {
  const token = await accessToken('todos.read todos.write');
  const added = await callTool('add_todo', { text: 'from the MCP server test' }, token);
  expect(added.status).toBe(200);
  const sub = decodeJwt(alice.tokens.id_token).sub;
  expect(added.body.result.structuredContent).toMatchObject({ caller: { sub, email: 'alice@example.com', client_id: AGENT_AT_AS.id }, added: { text: 'from the MCP server test' } });
  const listed = await callTool('list_todos', {}, token);
  expect(listed.status).toBe(200);
  expect(listed.body.result.content[0].text).toMatch(/^Todo list of alice@example\.com \(sub [^)]+\)/);
  expect(listed.body.result.structuredContent.todos.map((t: { text: string }) => t.text)).toContain('from the MCP server test');
});

test('no token: 401 with a challenge naming the metadata and the scopes, and no error code (RFC 6750 §3.1)', async () => {
  const res = await callTool('list_todos', {});
  expect(res.status).toBe(401);
  expect(res.challenge).toBe(`Bearer resource_metadata="${metadataUrl}", scope="todos.read todos.write"`);
  expect(res.body.result).toBeUndefined();
});

test('an Authorization header that is not Bearer: 400 invalid_request, with the challenge', async () => {
  const res = await rpc('tools/call', { name: 'list_todos', arguments: {} }, basic('alice', 'alice'));
  expect(res.status).toBe(400);
  expect(res.challenge).toMatch(new RegExp(`^Bearer error="invalid_request", error_description="[^"]*'Bearer <access token>'[^"]*", resource_metadata="${metadataUrl}"$`));
});

test('a token minted like the AS does is accepted (the control for the refused variants below)', async () => {
  const res = await callTool('list_todos', {}, await mintAccessToken());
  expect(res.status).toBe(200);
});

type Refused = [name: string, token: () => Promise<string>, description: RegExp];

const refused: Refused[] = [
  ['a token for another audience (signed by the demo AS)', () => mintAccessToken({ aud: 'https://mcp.todo.example/mcp' }), /for another resource; this MCP server is http:\/\/127\.0\.0\.1:\d+\/demo\/mcp/],
  ['an audience array without this server', () => mintAccessToken({ aud: ['https://a.example', 'https://b.example'] }), /for another resource/],
  ['the ID-JAG itself', async () => (await exchange(idjag.url, alice.tokens.id_token, { audience: asIssuer, resource: mcp })).body.access_token as string, /this is an ID-JAG, not an access token/],
  ['the IdP\'s ID Token', async () => alice.tokens.id_token as string, /issued by http:\/\/127\.0\.0\.1:\d+; this MCP server accepts only tokens from http:\/\/127\.0\.0\.1:\d+\/demo\/as/],
  ['expired', () => mintAccessToken({ iat: now() - 7200, exp: now() - 3600 }), /has expired/],
  ['iat in the future', () => mintAccessToken({ iat: now() + 3600, exp: now() + 7200 }), /iat is in the future/],
  ['another key under the AS kid', async () => mintAccessToken({}, {}, (await generateKeyPair('ES256')).privateKey), /signature does not verify/],
  ['an unknown kid', () => mintAccessToken({}, { kid: 'no-such-key' }), /no key of the authorization server matches/],
  ['typ JWT instead of at+jwt', () => mintAccessToken({}, { typ: 'JWT' }), /typ is not at\+jwt/],
  ['HMAC', () => mintAccessToken({}, { alg: 'HS256' }, new TextEncoder().encode('a-shared-secret-of-32-bytes-long!')), /alg is not accepted/],
  ['no sub', () => mintAccessToken({ sub: undefined }), /has no sub claim/],
  ['not a JWT', async () => 'opaque-token', /not a JWT/],
];

test.each(refused)('401 invalid_token with a challenge naming the metadata: %s', async (_name, token, description) => {
  const res = await callTool('list_todos', {}, await token());
  expect(res.status).toBe(401);
  const m = /^Bearer error="invalid_token", error_description="([^"]*)", resource_metadata="([^"]+)"$/.exec(res.challenge ?? '');
  expect(m).not.toBeNull();
  expect(m![1]).toMatch(description);
  expect(m![2]).toBe(metadataUrl);
  expect(res.body).toEqual({ error: 'invalid_token', error_description: expect.stringMatching(description) });
});

test('missing scope: a read-only token lists, but add_todo answers 403 insufficient_scope naming todos.write', async () => {
  const token = await accessToken('todos.read');
  expect(decodeJwt(token).scope).toBe('todos.read');
  expect((await callTool('list_todos', {}, token)).status).toBe(200);

  const res = await callTool('add_todo', { text: 'must not be stored' }, token);
  expect(res.status).toBe(403);
  expect(res.challenge).toMatch(new RegExp(`^Bearer error="insufficient_scope", error_description="[^"]*", scope="todos.write", resource_metadata="${metadataUrl}"$`));
  const stored = await idjag.database.db.selectFrom('demo_todos').select('text').where('text', '=', 'must not be stored').execute();
  expect(stored).toEqual([]);
});

test('a write-only token cannot list: 403 naming todos.read', async () => {
  const res = await callTool('list_todos', {}, await mintAccessToken({ scope: 'todos.write' }));
  expect(res.status).toBe(403);
  expect(res.challenge).toMatch(/error="insufficient_scope".*scope="todos.read"/);
});

test('a browser page from another origin is refused (DNS rebinding protection), before any token check', async () => {
  const res = await rpc('tools/call', { name: 'list_todos', arguments: {} }, undefined, { origin: 'http://evil.example' });
  expect(res.status).toBe(403);
  expect(res.challenge).toBeNull();
});

test('--no-demo serves neither the demo AS nor the MCP server', async () => {
  const bare = await startTestServer({ demo: false });
  try {
    for (const path of ['/demo/mcp', '/.well-known/oauth-protected-resource/demo/mcp', '/.well-known/oauth-authorization-server/demo/as', '/demo/as/jwks']) {
      expect([path, (await fetch(`${bare.url}${path}`)).status]).toEqual([path, 404]);
    }
    expect(bare.demo).toBeUndefined();
  } finally {
    await bare.dispose();
  }
});

test('the demo is on by default; --no-demo or IDJAG_NO_DEMO=1 turns it off', () => {
  expect(loadConfig([], {}).demo).toBe(true);
  expect(loadConfig(['--no-demo'], {}).demo).toBe(false);
  expect(loadConfig([], { IDJAG_NO_DEMO: '1' }).demo).toBe(false);
});

test('an unreachable AS JWKS is a 503 temporarily_unavailable, not a verdict on the token', async () => {
  const listen = async (app?: Koa) => {
    const server = createServer(app?.callback());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
  };
  const dead = await listen();
  await new Promise((resolve) => dead.server.close(resolve));
  // an MCP server of its own, trusting the same AS issuer but with keys at a port where nothing listens
  const cut = demoMcpServer({ db: idjag.database.db, baseUrl: idjag.issuer, asIssuer, asJwksUri: `${dead.url}/jwks` });
  const app = new Koa();
  app.use(cut);
  const live = await listen(app);
  try {
    const res = await fetch(`${live.url}/demo/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await mintAccessToken()}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ error: 'temporarily_unavailable', error_description: expect.stringMatching(/keys could not be fetched/) });
  } finally {
    await cut.close();
    live.server.closeAllConnections();
    await new Promise((resolve) => live.server.close(resolve));
  }
});
