// Interop with the official MCP TypeScript client (@modelcontextprotocol/client v2): its token-exchange helpers
// must get an ID-JAG from a running idjag, and that ID-JAG must pass the checks a Resource AS applies (docs/protocol.md,
// "Step 3"). The client's requests go through a recording fetch, so each test also sees what was sent on the wire.
import { discoverAndRequestJwtAuthGrant, requestJwtAuthorizationGrant, type FetchLike, type JwtAuthGrantResult } from '@modelcontextprotocol/client';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, generateKeyPair, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import { DEMO_AGENT, signIn } from './helpers/browser.ts';
import { ID_JAG, ID_TOKEN, TOKEN_EXCHANGE, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const CLIENT_ID_AT_TODO = 'demo-agent-at-todo';
/** Short-lived, as the MCP profile demands; idjag's default is 300 s. */
const MAX_LIFETIME_S = 300;

let idjag: TestServer;
let alice: Awaited<ReturnType<typeof signIn>>;
let bob: Awaited<ReturnType<typeof signIn>>;

beforeAll(async () => {
  idjag = await startTestServer();
  alice = await signIn(idjag.url);
  bob = await signIn(idjag.url, { username: 'bob', password: 'bob' });
});
afterAll(() => idjag.dispose());

// ---------------------------------------------------------------------------------------------------------
// What the client sends and gets back

interface Exchange {
  url: string;
  method: string;
  headers: Headers;
  body: string;
  status: number;
  response: string;
}

/** A fetch for the client's `fetchFn` option that records every request and response. */
function recordingFetch(): { fetchFn: FetchLike; calls: Exchange[] } {
  const calls: Exchange[] = [];
  const fetchFn: FetchLike = async (url, init) => {
    const res = await fetch(url, init);
    calls.push({
      url: String(url),
      method: (init?.method ?? 'GET').toUpperCase(),
      headers: new Headers(init?.headers),
      body: typeof init?.body === 'string' ? init.body : init?.body instanceof URLSearchParams ? init.body.toString() : '',
      status: res.status,
      response: await res.clone().text(),
    });
    return res;
  };
  return { fetchFn, calls };
}

/** Checks the one token request the client made: an RFC 8693 exchange for an ID-JAG, client_secret_post. */
function expectTokenExchangeRequest(call: Exchange | undefined, scope?: string) {
  expect(call).toBeDefined();
  expect(call!.method).toBe('POST');
  expect(call!.url).toBe(`${idjag.issuer}/token`);
  expect(call!.headers.get('content-type')).toBe('application/x-www-form-urlencoded');
  expect(call!.headers.get('authorization')).toBeNull();
  const form = Object.fromEntries(new URLSearchParams(call!.body));
  expect(form).toEqual({
    grant_type: TOKEN_EXCHANGE,
    requested_token_type: ID_JAG,
    subject_token: alice.tokens.id_token,
    subject_token_type: ID_TOKEN,
    audience: TODO_AS,
    resource: TODO_MCP,
    client_id: DEMO_AGENT.id,
    client_secret: DEMO_AGENT.secret,
    ...(scope ? { scope } : {}),
  });
}

// ---------------------------------------------------------------------------------------------------------
// A Resource AS's view of an ID-JAG (draft §4.4 / RFC 7523)

interface ResourceAs {
  issuer: string;
  /** the client as the Resource AS authenticated it */
  clientId: string;
  mcpServers: string[];
  trustedIdps: string[];
}

const TODO: ResourceAs = { issuer: TODO_AS, clientId: CLIENT_ID_AT_TODO, mcpServers: [TODO_MCP], trustedIdps: [] };

/** Applies the Resource AS's checks to an ID-JAG; throws on the first failure, like an `invalid_grant`. */
function resourceAsVerifier(as: ResourceAs) {
  const jwks = createRemoteJWKSet(new URL(`${idjag.url}/jwks`));
  const seen = new Map<string, number>();
  return async (assertion: string): Promise<JWTPayload> => {
    // signature by a trusted IdP's keys, asymmetric algorithms only, typ, iss, exp (jose's default skew: none)
    const { payload, protectedHeader } = await jwtVerify(assertion, jwks, {
      typ: 'oauth-id-jag+jwt',
      issuer: as.trustedIdps,
      algorithms: ['ES256', 'ES384', 'ES512', 'PS256', 'RS256', 'EdDSA'],
      requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'],
      maxTokenAge: MAX_LIFETIME_S,
    });
    if (protectedHeader.typ !== 'oauth-id-jag+jwt') throw new Error(`typ is ${protectedHeader.typ}`);
    // aud is this Resource AS's issuer: a string, or an array of exactly one
    const aud = Array.isArray(payload.aud) && payload.aud.length === 1 ? payload.aud[0] : payload.aud;
    if (aud !== as.issuer) throw new Error(`aud ${JSON.stringify(payload.aud)} is not ${as.issuer}`);
    if (payload.client_id !== as.clientId) throw new Error(`client_id ${String(payload.client_id)} is not the authenticated client ${as.clientId}`);
    const now = Math.floor(Date.now() / 1000);
    if (typeof payload.exp !== 'number' || payload.exp <= now) throw new Error('expired');
    if (typeof payload.iat !== 'number' || payload.iat > now + 5) throw new Error('iat in the future');
    if (payload.exp - payload.iat > MAX_LIFETIME_S) throw new Error(`lifetime ${payload.exp - payload.iat}s is not short`);
    if (typeof payload.jti !== 'string' || payload.jti === '') throw new Error('no jti');
    for (const [jti, exp] of seen) if (exp <= now) seen.delete(jti);
    if (seen.has(payload.jti)) throw new Error(`jti ${payload.jti} replayed`);
    const resources = [payload.resource].flat();
    if (resources.length === 0 || !resources.every((r) => typeof r === 'string' && as.mcpServers.includes(r))) {
      throw new Error(`resource ${JSON.stringify(payload.resource)} is not one of this AS's MCP servers`);
    }
    seen.set(payload.jti, payload.exp);
    return payload;
  };
}

// ---------------------------------------------------------------------------------------------------------

const grants: { direct?: JwtAuthGrantResult; discovered?: JwtAuthGrantResult } = {};

test('requestJwtAuthorizationGrant gets an ID-JAG from idjag\'s token endpoint', async () => {
  const { fetchFn, calls } = recordingFetch();
  const result = await requestJwtAuthorizationGrant({
    tokenEndpoint: `${idjag.issuer}/token`,
    idToken: alice.tokens.id_token,
    clientId: DEMO_AGENT.id,
    clientSecret: DEMO_AGENT.secret,
    audience: TODO_AS,
    resource: TODO_MCP,
    scope: 'todos.read todos.write',
    fetchFn,
  });

  expect(calls).toHaveLength(1);
  expectTokenExchangeRequest(calls[0], 'todos.read todos.write');
  expect(calls[0]!.status).toBe(200);
  expect(JSON.parse(calls[0]!.response)).toMatchObject({ issued_token_type: ID_JAG, token_type: 'N_A' });

  // all requested scopes granted, so the response carries no scope (RFC 8693: only when it differs)
  expect(result).toEqual({ jwtAuthGrant: expect.any(String), expiresIn: MAX_LIFETIME_S, scope: undefined });
  expect(decodeProtectedHeader(result.jwtAuthGrant).typ).toBe('oauth-id-jag+jwt');
  expect(decodeJwt(result.jwtAuthGrant)).toMatchObject({ scope: 'todos.read todos.write', sub: decodeJwt(alice.tokens.id_token).sub });
  grants.direct = result;
});

test('discoverAndRequestJwtAuthGrant finds the token endpoint from the issuer (RFC 8414) and gets an ID-JAG', async () => {
  const { fetchFn, calls } = recordingFetch();
  const result = await discoverAndRequestJwtAuthGrant({
    idpUrl: idjag.issuer,
    idToken: alice.tokens.id_token,
    clientId: DEMO_AGENT.id,
    clientSecret: DEMO_AGENT.secret,
    audience: TODO_AS,
    resource: TODO_MCP,
    scope: 'todos.read',
    fetchFn,
  });

  // the client's first choice, RFC 8414 metadata, answers: no fallback to openid-configuration
  expect(calls.map((c) => `${c.method} ${c.url} ${c.status}`)).toEqual([
    `GET ${idjag.issuer}/.well-known/oauth-authorization-server 200`,
    `POST ${idjag.issuer}/token 200`,
  ]);
  expect(JSON.parse(calls[0]!.response)).toMatchObject({ issuer: idjag.issuer, token_endpoint: `${idjag.issuer}/token` });
  expectTokenExchangeRequest(calls[1], 'todos.read');

  expect(result).toEqual({ jwtAuthGrant: expect.any(String), expiresIn: MAX_LIFETIME_S, scope: undefined });
  expect(decodeJwt(result.jwtAuthGrant)).toMatchObject({ scope: 'todos.read' });
  grants.discovered = result;
});

test('a Resource AS applying the step-3 checks accepts both ID-JAGs, and refuses a replay', async () => {
  expect(grants.direct).toBeDefined();
  expect(grants.discovered).toBeDefined();
  const verify = resourceAsVerifier({ ...TODO, trustedIdps: [idjag.issuer] });
  const sub = decodeJwt(alice.tokens.id_token).sub;

  const direct = await verify(grants.direct!.jwtAuthGrant);
  const discovered = await verify(grants.discovered!.jwtAuthGrant);
  for (const payload of [direct, discovered]) {
    expect(payload).toMatchObject({ iss: idjag.issuer, sub, aud: TODO_AS, client_id: CLIENT_ID_AT_TODO, resource: TODO_MCP, jti: expect.any(String) });
    expect(payload.exp! - payload.iat!).toBe(MAX_LIFETIME_S);
  }
  expect(direct.jti).not.toBe(discovered.jti);

  await expect(verify(grants.direct!.jwtAuthGrant)).rejects.toThrow(/replayed/);
});

test('the Resource AS verifier is not vacuous: wrong audience, client, resource, issuer or signing key are refused', async () => {
  expect(grants.direct).toBeDefined();
  const jag = grants.direct!.jwtAuthGrant;
  const trusted = { ...TODO, trustedIdps: [idjag.issuer] };
  await expect(resourceAsVerifier({ ...trusted, issuer: 'https://auth.other.example' })(jag)).rejects.toThrow(/aud/);
  await expect(resourceAsVerifier({ ...trusted, clientId: 'someone-else' })(jag)).rejects.toThrow(/client_id/);
  await expect(resourceAsVerifier({ ...trusted, mcpServers: ['https://mcp.todo.example/admin'] })(jag)).rejects.toThrow(/resource/);
  await expect(resourceAsVerifier({ ...TODO, trustedIdps: ['https://idp.other.example'] })(jag)).rejects.toThrow(/iss/);

  // the same claims and header, signed with a key that is not idjag's
  const { privateKey } = await generateKeyPair('ES256');
  const { kid } = decodeProtectedHeader(jag);
  const forged = await new SignJWT(decodeJwt(jag)).setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt', ...(kid ? { kid } : {}) }).sign(privateKey);
  await expect(resourceAsVerifier(trusted)(forged)).rejects.toThrow(/signature/);
});

test('bob (sales) is refused: both client calls reject with idjag\'s invalid_target in the error', async () => {
  const { fetchFn, calls } = recordingFetch();
  const options = {
    idToken: bob.tokens.id_token,
    clientId: DEMO_AGENT.id,
    clientSecret: DEMO_AGENT.secret,
    audience: TODO_AS,
    resource: TODO_MCP,
    scope: 'todos.read',
    fetchFn,
  };
  await expect(requestJwtAuthorizationGrant({ ...options, tokenEndpoint: `${idjag.issuer}/token` }))
    .rejects.toThrow(/^Token exchange failed: invalid_target\b/);
  await expect(discoverAndRequestJwtAuthGrant({ ...options, idpUrl: idjag.issuer }))
    .rejects.toThrow(/^Token exchange failed: invalid_target\b/);

  const posts = calls.filter((c) => c.method === 'POST');
  expect(posts).toHaveLength(2);
  for (const post of posts) {
    expect(post.status).toBe(400);
    const body = JSON.parse(post.response) as Record<string, unknown>;
    expect(body.error).toBe('invalid_target');
    expect(body.access_token).toBeUndefined();
  }
});
