import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, generateKeyPair, importJWK, jwtVerify, SignJWT, type JWK } from 'jose';
import { applyDocument, parseDocument } from '../src/admin/document.ts';
import { migrateToLatest, openDatabase, type Database } from '../src/db/index.ts';
import { demoResourceAs, JWT_BEARER } from '../src/demo/resource-as.ts';
import { DPOP_ALGS } from '../src/dpop/proof.ts';
import { basic, signIn } from './helpers/browser.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const AGENT = { id: 'demo-agent-at-todo', secret: 'demo-agent-at-todo-secret' };
const OTHER = { id: 'other-agent', secret: 'other-agent-secret' };
const NOTES_MCP = 'https://mcp.notes.example/mcp';
const NOTES_ADMIN = 'https://mcp.notes.example/admin';

interface DemoAs {
  issuer: string;
  url: string;
  database: Database;
  close(): Promise<void>;
}

/** The demo AS as its own party: its own koa app, port and database; only the IdP's URLs are shared. */
async function startDemoAs(dbLocation: string, port = 0, idpJwksUri = `${idjag.url}/jwks`): Promise<DemoAs> {
  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const database = openDatabase(dbLocation);
  await migrateToLatest(database.db);
  const demo = demoResourceAs({
    db: database.db,
    baseUrl: url,
    idpIssuer: idjag.issuer,
    idpJwksUri,
    clients: [{ client_id: AGENT.id, client_secret: AGENT.secret }, { client_id: OTHER.id, client_secret: OTHER.secret }],
    mcpServers: [{ resource: NOTES_MCP, scopes: ['notes.read', 'notes.write'] }, { resource: NOTES_ADMIN, scopes: ['notes.admin'] }],
    log: { error: (obj: unknown) => console.error('demo AS error', obj) },
  });
  const app = new Koa();
  app.use(demo);
  server.on('request', app.callback());
  return {
    issuer: demo.issuer,
    url,
    database,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await closed;
      await database.close();
      // let the test's pooled keep-alive sockets see the close before a restart takes the port
      await new Promise((resolve) => setTimeout(resolve, 100));
    },
  };
}

let idjag: TestServer;
let demoDb: TestDatabase;
let demo: DemoAs;
let alice: Awaited<ReturnType<typeof signIn>>;
let idJagKey: { kid: string; privateJwk: JWK };

beforeAll(async () => {
  idjag = await startTestServer();
  demoDb = await createTestDatabase('idjag-demo-as');
  demo = await startDemoAs(demoDb.location);
  // The IdP's admin registers the demo AS as a Resource AS with two MCP servers, and lets demo-agent reach
  // both for engineering, as demo-agent-at-todo at the demo AS.
  await applyDocument(idjag.database.db, parseDocument({
    resource_servers: [{
      issuer: demo.issuer,
      name: 'Demo Resource AS',
      // it maps users by email, so the IdP releases email to it (a new Resource AS gets no identity claim)
      released_claims: ['email'],
      mcp_servers: [
        { resource: NOTES_MCP, name: 'Notes', scopes: ['notes.read', 'notes.write'] },
        { resource: NOTES_ADMIN, name: 'Notes admin', scopes: ['notes.admin'] },
      ],
    }],
    rules: [NOTES_MCP, NOTES_ADMIN].map((resource, i) => ({
      id: `engineering-notes-${i}`,
      client_id: 'demo-agent',
      audience: demo.issuer,
      resource,
      who: { groups: ['engineering'] },
      scopes: resource === NOTES_MCP ? ['notes.read', 'notes.write'] : ['notes.admin'],
      default_scopes: resource === NOTES_MCP ? ['notes.read', 'notes.write'] : ['notes.admin'],
      rs_client_id: AGENT.id,
    })),
  }));
  alice = await signIn(idjag.url);
  const row = await idjag.database.db.selectFrom('signing_keys').select(['kid', 'private_jwk'])
    .where('purpose', '=', 'id_jag').where('retired_at', 'is', null).executeTakeFirstOrThrow();
  idJagKey = { kid: row.kid, privateJwk: JSON.parse(row.private_jwk) as JWK };
});

afterAll(async () => {
  await demo?.close();
  await demoDb?.dispose();
  await idjag?.dispose();
});

/** A real ID-JAG from the IdP's token exchange (for alice, via demo-agent). */
async function realIdJag(over: Record<string, string | undefined> = {}): Promise<string> {
  const res = await exchange(idjag.url, alice.tokens.id_token, { audience: demo.issuer, resource: NOTES_MCP, ...over });
  if (res.status !== 200) throw new Error(`exchange failed: ${JSON.stringify(res.body)}`);
  return res.body.access_token as string;
}

const now = () => Math.floor(Date.now() / 1000);

interface MintOptions {
  header?: Record<string, unknown>;
  /** replaces claims; undefined removes one */
  claims?: Record<string, unknown>;
  key?: Parameters<SignJWT['sign']>[0];
}

/** An ID-JAG minted here, by default exactly like the IdP's (its key, its header, its claims). */
async function mintIdJag(opts: MintOptions = {}): Promise<string> {
  const t = now();
  const claims = Object.fromEntries(Object.entries({
    iss: idjag.issuer, sub: decodeJwt(alice.tokens.id_token).sub, aud: demo.issuer, client_id: AGENT.id,
    resource: NOTES_MCP, scope: 'notes.read notes.write', email: 'alice@example.com', jti: randomUUID(), iat: t, exp: t + 300,
    ...opts.claims,
  }).filter(([, v]) => v !== undefined));
  const key = opts.key ?? await importJWK(idJagKey.privateJwk, 'ES256');
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: idJagKey.kid, ...opts.header } as never).sign(key);
}

interface Answer {
  status: number;
  body: Record<string, any>;
  headers: Headers;
}

async function post(body: string, headers: Record<string, string>): Promise<Answer> {
  const res = await fetch(`${demo.issuer}/token`, { method: 'POST', body, headers });
  const text = await res.text();
  let parsed: Record<string, any>;
  try {
    parsed = JSON.parse(text) as Record<string, any>;
  } catch {
    parsed = { unparsed: text };
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

function jwtBearer(form: Record<string, string | string[]>, auth: { id: string; secret: string } | null = AGENT): Promise<Answer> {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries({ grant_type: JWT_BEARER, ...form })) for (const item of [v].flat()) body.append(k, item);
  return post(body.toString(), {
    'content-type': 'application/x-www-form-urlencoded',
    ...(auth ? { authorization: basic(auth.id, auth.secret) } : {}),
  });
}

async function metadata(): Promise<Record<string, any>> {
  const res = await fetch(`${demo.url}/.well-known/oauth-authorization-server/demo/as`);
  expect(res.status).toBe(200);
  return await res.json() as Record<string, any>;
}

test('RFC 8414 metadata at the path-inserted well-known URL, with the ID-JAG profile', async () => {
  expect(demo.issuer).toBe(`${demo.url}/demo/as`);
  expect(await metadata()).toEqual({
    issuer: demo.issuer,
    authorization_endpoint: `${demo.issuer}/authorize`,
    response_types_supported: ['code'],
    token_endpoint: `${demo.issuer}/token`,
    jwks_uri: `${demo.issuer}/jwks`,
    grant_types_supported: [JWT_BEARER],
    authorization_grant_profiles_supported: ['urn:ietf:params:oauth:grant-profile:id-jag'],
    token_endpoint_auth_methods_supported: ['client_secret_basic'],
    scopes_supported: ['notes.read', 'notes.write', 'notes.admin'],
    dpop_signing_alg_values_supported: [...DPOP_ALGS],
  });
});

test('the authorization endpoint explains that only the JWT-bearer grant is supported', async () => {
  const res = await fetch(`${demo.issuer}/authorize?response_type=code&client_id=x`);
  expect(res.status).toBe(400);
  expect(res.headers.get('content-type')).toMatch(/^text\/html/);
  expect(await res.text()).toMatch(/only supports the JWT-bearer grant/);
});

test('happy path: a real ID-JAG for alice becomes an RFC 9068 access token for the MCP server', async () => {
  const assertion = await realIdJag();
  const idJag = decodeJwt(assertion);
  const res = await jwtBearer({ assertion, resource: NOTES_MCP });
  expect(res.status).toBe(200);
  expect(res.headers.get('cache-control')).toBe('no-store');
  expect(res.body).toEqual({ access_token: expect.any(String), token_type: 'Bearer', expires_in: 3600, scope: 'notes.read notes.write' });

  const jwks = createRemoteJWKSet(new URL((await metadata()).jwks_uri));
  const { payload, protectedHeader } = await jwtVerify(res.body.access_token, jwks, {
    issuer: demo.issuer, audience: NOTES_MCP, typ: 'at+jwt', algorithms: ['ES256'],
  });
  expect(protectedHeader).toMatchObject({ alg: 'ES256', typ: 'at+jwt', kid: expect.any(String) });
  expect(payload).toEqual({
    iss: demo.issuer, sub: idJag.sub, aud: NOTES_MCP, client_id: AGENT.id, scope: 'notes.read notes.write',
    email: 'alice@example.com', jti: expect.any(String), iat: expect.any(Number), exp: payload.iat! + 3600,
  });
  expect(payload.jti).not.toBe(idJag.jti);
});

test('the resource may come from the ID-JAG alone, and a requested subset of its scopes is issued', async () => {
  const res = await jwtBearer({ assertion: await realIdJag(), scope: 'notes.read unknown.scope' });
  expect(res.status).toBe(200);
  expect(res.body.scope).toBe('notes.read');
  expect(decodeJwt(res.body.access_token)).toMatchObject({ aud: NOTES_MCP, scope: 'notes.read' });
});

test('an ID-JAG minted by this test with the IdP key is accepted (the control for the forged variants below)', async () => {
  const res = await jwtBearer({ assertion: await mintIdJag() });
  expect(res.status).toBe(200);
});

test('a jti is accepted once, and still refused after the demo AS restarts on the same database', async () => {
  const assertion = await realIdJag();
  expect((await jwtBearer({ assertion })).status).toBe(200);
  const again = await jwtBearer({ assertion });
  expect(again.status).toBe(400);
  expect(again.body).toEqual({ error: 'invalid_grant', error_description: expect.stringMatching(/already used/) });

  const kidBefore = decodeProtectedHeader((await jwtBearer({ assertion: await realIdJag() })).body.access_token).kid;
  const port = Number(new URL(demo.url).port);
  await demo.close();
  demo = await startDemoAs(demoDb.location, port);
  const afterRestart = await jwtBearer({ assertion });
  expect(afterRestart.status).toBe(400);
  expect(afterRestart.body.error_description).toMatch(/already used/);
  expect(afterRestart.body.access_token).toBeUndefined();
  // the signing key survived the restart too
  const fresh = await jwtBearer({ assertion: await realIdJag() });
  expect(fresh.status).toBe(200);
  expect(decodeProtectedHeader(fresh.body.access_token).kid).toBe(kidBefore);
});

type Case = [name: string, request: () => Promise<{ form: Record<string, string>; auth?: typeof AGENT }>, description: RegExp];

const rejected: Case[] = [
  ['wrong typ', async () => ({ form: { assertion: await mintIdJag({ header: { typ: 'JWT' } }) } }), /typ is "JWT"/],
  ['no typ', async () => ({ form: { assertion: await mintIdJag({ header: { typ: undefined } }) } }), /typ is missing/],
  ['an ID-JAG for another Resource AS (real, aud todo)', async () => ({ form: { assertion: await realIdJag({ audience: TODO_AS, resource: TODO_MCP }) } }), /aud "https:\/\/auth\.todo\.example" is not this authorization server/],
  ['aud an array of two', async () => ({ form: { assertion: await mintIdJag({ claims: { aud: [demo.issuer, 'https://other.example'] } }) } }), /aud .* is not this authorization server/],
  ['client_id mismatch (real ID-JAG, other client authenticated)', async () => ({ form: { assertion: await realIdJag() }, auth: OTHER }), /issued to client_id demo-agent-at-todo, but the request authenticated as other-agent/],
  ['expired', async () => ({ form: { assertion: await mintIdJag({ claims: { iat: now() - 600, exp: now() - 120 } }) } }), /expired \d+ s ago/],
  ['iat in the future', async () => ({ form: { assertion: await mintIdJag({ claims: { iat: now() + 300, exp: now() + 600 } }) } }), /iat is \d+ s in the future/],
  ['untrusted iss', async () => ({ form: { assertion: await mintIdJag({ claims: { iss: 'https://evil.example' } }) } }), /iss "https:\/\/evil\.example" is not a trusted IdP/],
  ['no jti', async () => ({ form: { assertion: await mintIdJag({ claims: { jti: undefined } }) } }), /jti claim is missing/],
  ['unknown kid', async () => ({ form: { assertion: await mintIdJag({ header: { kid: 'no-such-key' } }) } }), /no key in the IdP's JWKS matches the ID-JAG's kid "no-such-key"/],
  ['forged signature (fresh key, the IdP kid)', async () => ({ form: { assertion: await mintIdJag({ key: (await generateKeyPair('ES256')).privateKey }) } }), /signature does not verify/],
  ['HMAC alg', async () => ({ form: { assertion: await mintIdJag({ header: { alg: 'HS256' }, key: new TextEncoder().encode('a-shared-secret-of-32-bytes-long!') }) } }), /alg "HS256" is not accepted/],
  ['alg none', async () => {
    const part = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const t = now();
    const assertion = `${part({ alg: 'none', typ: 'oauth-id-jag+jwt' })}.${part({ iss: idjag.issuer, sub: 'x', aud: demo.issuer, client_id: AGENT.id, jti: randomUUID(), iat: t, exp: t + 300, scope: 'notes.read', resource: NOTES_MCP })}.`;
    return { form: { assertion } };
  }, /alg "none" is not accepted/],
  ['resource of another of its servers than the ID-JAG grants', async () => ({ form: { assertion: await realIdJag(), resource: NOTES_ADMIN } }), /grants access to https:\/\/mcp\.notes\.example\/mcp, not to resource https:\/\/mcp\.notes\.example\/admin/],
  ['resource not served by this AS', async () => ({ form: { assertion: await realIdJag(), resource: TODO_MCP } }), /resource https:\/\/mcp\.todo\.example\/mcp is not an MCP server of this authorization server/],
  ['ID-JAG resource not served by this AS, none requested', async () => ({ form: { assertion: await mintIdJag({ claims: { resource: 'https://elsewhere.example/mcp' } }) } }), /resource https:\/\/elsewhere\.example\/mcp is not an MCP server/],
  ['scope not in the ID-JAG', async () => ({ form: { assertion: await realIdJag({ scope: 'notes.read' }), scope: 'notes.write' } }), /none of the requested scopes \(notes\.write\) is granted by the ID-JAG .*\(it grants notes\.read\)/],
  ['garbage assertion', async () => ({ form: { assertion: 'not-a-jwt' } }), /not a compact JWS/],
  ['three parts of garbage', async () => ({ form: { assertion: 'a.b.c' } }), /not a compact JWS/],
  ['a header that decodes but a payload that does not', async () => ({ form: { assertion: `${Buffer.from('{"alg":"ES256","typ":"oauth-id-jag+jwt"}').toString('base64url')}.%%%.sig` } }), /payload is not a JSON object/],
];

test.each(rejected)('invalid_grant, no access token: %s', async (_name, request, description) => {
  const { form, auth } = await request();
  const res = await jwtBearer(form, auth ?? AGENT);
  expect(res.status).toBe(400);
  expect(res.body).toEqual({ error: 'invalid_grant', error_description: expect.stringMatching(description) });
  expect(res.headers.get('cache-control')).toBe('no-store');
});

test.each([
  ['wrong secret', { id: AGENT.id, secret: 'wrong-secret' }],
  ['unknown client', { id: 'nobody', secret: AGENT.secret }],
])('invalid_client (401, WWW-Authenticate Basic): %s', async (_name, auth) => {
  const res = await jwtBearer({ assertion: await mintIdJag() }, auth);
  expect(res.status).toBe(401);
  expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
  expect(res.body).toEqual({ error: 'invalid_client', error_description: expect.stringMatching(/client authentication failed/) });
});

const form = 'application/x-www-form-urlencoded';
const okAuth = () => basic(AGENT.id, AGENT.secret);
type Malformed = [name: string, send: () => Promise<Answer>, status: number, error: string, description: RegExp];

const malformed: Malformed[] = [
  ['no Authorization header', async () => jwtBearer({ assertion: await mintIdJag() }, null), 401, 'invalid_client', /client_secret_basic/],
  ['Authorization not base64', () => post(`grant_type=${JWT_BEARER}&assertion=x`, { 'content-type': form, authorization: 'Basic !!!%%%' }), 401, 'invalid_client', /not HTTP Basic/],
  ['Bearer instead of Basic', () => post(`grant_type=${JWT_BEARER}&assertion=x`, { 'content-type': form, authorization: 'Bearer abc' }), 401, 'invalid_client', /not HTTP Basic/],
  ['Basic without a colon', () => post(`grant_type=${JWT_BEARER}&assertion=x`, { 'content-type': form, authorization: `Basic ${Buffer.from('nocolon').toString('base64')}` }), 401, 'invalid_client', /no ":"/],
  ['Basic with broken percent-encoding', () => post(`grant_type=${JWT_BEARER}&assertion=x`, { 'content-type': form, authorization: `Basic ${Buffer.from('%E0%A4%A:x').toString('base64')}` }), 401, 'invalid_client', /form-urlencoded/],
  ['client secret in the body as well', async () => jwtBearer({ assertion: await mintIdJag(), client_secret: AGENT.secret }), 401, 'invalid_client', /only with HTTP Basic/],
  ['JSON body', () => post(JSON.stringify({ grant_type: JWT_BEARER, assertion: 'x' }), { 'content-type': 'application/json', authorization: okAuth() }), 400, 'invalid_request', /x-www-form-urlencoded/],
  ['no content type', () => post('grant_type=x', { authorization: okAuth() }), 400, 'invalid_request', /x-www-form-urlencoded/],
  ['missing grant_type', () => post('assertion=x', { 'content-type': form, authorization: okAuth() }), 400, 'invalid_request', /grant_type is missing/],
  ['another grant_type', () => post('grant_type=client_credentials', { 'content-type': form, authorization: okAuth() }), 400, 'unsupported_grant_type', /client_credentials is not supported/],
  ['missing assertion', () => jwtBearer({}), 400, 'invalid_request', /assertion is missing/],
  ['assertion twice', () => jwtBearer({ assertion: ['a', 'b'] }), 400, 'invalid_request', /assertion was sent more than once/],
  ['assertion as a nested form value', () => post(`grant_type=${encodeURIComponent(JWT_BEARER)}&assertion[a]=b`, { 'content-type': form, authorization: okAuth() }), 400, 'invalid_request', /assertion is not a plain form value/],
  ['body over the form limit', () => post(`grant_type=${encodeURIComponent(JWT_BEARER)}&assertion=${'a'.repeat(40_000)}`, { 'content-type': form, authorization: okAuth() }), 413, 'invalid_request', /could not be read/],
  ['invalid percent-encoding in the body', () => post(`grant_type=${encodeURIComponent(JWT_BEARER)}&assertion=%E0%A4%A`, { 'content-type': form, authorization: okAuth() }), 400, 'invalid_grant', /not a compact JWS/],
];

test.each(malformed)('malformed request answered with an OAuth error, never a 500: %s', async (_name, send, status, error, description) => {
  const res = await send();
  expect(res.status).toBe(status);
  expect(res.body).toEqual({ error, error_description: expect.stringMatching(description) });
  expect(res.body.access_token).toBeUndefined();
});

test('GET on the token endpoint is 405, the JWKS publishes only a public key', async () => {
  expect((await fetch(`${demo.issuer}/token`)).status).toBe(405);
  const { keys } = await (await fetch(`${demo.issuer}/jwks`)).json() as { keys: JWK[] };
  expect(keys).toHaveLength(1);
  expect(keys[0]).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig', kid: expect.any(String) });
  expect(keys[0]!.d).toBeUndefined();
});

test('an unreachable IdP JWKS is an invalid_grant naming the JWKS, not a 500', async () => {
  const scratch = await createTestDatabase('idjag-demo-as-nojwks');
  // a port that was just bound and released: nothing listens there
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const deadPort = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  const cut = await startDemoAs(scratch.location, 0, `http://127.0.0.1:${deadPort}/jwks`);
  try {
    const res = await fetch(`${cut.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': form, authorization: okAuth() },
      body: new URLSearchParams({ grant_type: JWT_BEARER, assertion: await mintIdJag({ claims: { aud: cut.issuer } }) }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: 'invalid_grant', error_description: expect.stringMatching(/JWKS could not be fetched/) });
  } finally {
    await cut.close();
    await scratch.dispose();
  }
});
