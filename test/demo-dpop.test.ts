/**
 * The bound chain (draft §9.8.1.2, RFC 9449 §5, §7): an ID-JAG the IdP bound to the client's DPoP key is good
 * at the demo Resource AS only with a proof by that key, and buys a DPoP-bound access token (token_type DPoP,
 * cnf.jkt); the demo MCP server takes that token only as "Authorization: DPoP" with a proof by the same key
 * carrying the token's hash (ath). With the right key the chain works; with none, another key or a replayed
 * proof it stops, saying why. Then `npm run demo:client -- --dpop` end to end, with the official MCP client.
 */
import { decodeJwt } from 'jose';
import { runDemoClient, type DemoClientResult } from '../src/demo/client.ts';
import { basic, signIn } from './helpers/browser.ts';
import { dpopKey, makeProof, type DpopKey } from './helpers/dpop.ts';
import { exchange } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const AGENT_AT_AS = { id: 'demo-agent-at-todo', secret: 'demo-agent-at-todo-secret' };
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

let idjag: TestServer;
let idToken: string;
let asIssuer: string;
let mcp: string;
let mine: DpopKey;
let theirs: DpopKey;

beforeAll(async () => {
  idjag = await startTestServer();
  asIssuer = `${idjag.issuer}/demo/as`;
  mcp = `${idjag.issuer}/demo/mcp`;
  idToken = (await signIn(idjag.url)).tokens.id_token as string;
  mine = await dpopKey();
  theirs = await dpopKey();
});
afterAll(() => idjag.dispose());

/** Step 2: an ID-JAG for the demo AS and MCP server, bound to `key` when one is given. */
async function idJag(key?: DpopKey): Promise<string> {
  const proof: Record<string, string> = key ? { DPoP: await makeProof(key, { htu: `${idjag.issuer}/token` }) } : {};
  const res = await exchange(idjag.url, idToken, { audience: asIssuer, resource: mcp, scope: 'todos.read todos.write' }, undefined, proof);
  expect(res.status).toBe(200);
  return res.body.access_token as string;
}

/** Step 3: the JWT-bearer grant at the demo AS, with this DPoP header if any. */
async function grant(assertion: string, dpop?: string): Promise<{ status: number; body: Record<string, string> }> {
  const res = await fetch(`${asIssuer}/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded', authorization: basic(AGENT_AT_AS.id, AGENT_AT_AS.secret),
      ...(dpop === undefined ? {} : { dpop }),
    },
    body: new URLSearchParams({ grant_type: JWT_BEARER, assertion, resource: mcp }),
  });
  return { status: res.status, body: await res.json() as Record<string, string> };
}

const asProof = (key: DpopKey, over: Parameters<typeof makeProof>[1] | object = {}) => makeProof(key, { htu: `${asIssuer}/token`, ...over });

/** Step 4: one MCP request (initialize) with these headers. */
async function call(headers: Record<string, string>): Promise<{ status: number; challenge: string | null; body: any }> {
  const res = await fetch(mcp, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25', ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'test', version: '1' } } }),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    const data = text.split('\n').find((l) => l.startsWith('data:'));
    body = JSON.parse(data ? data.slice(5) : text);
  } catch { /* keep the text */ }
  return { status: res.status, challenge: res.headers.get('www-authenticate'), body };
}

const mcpProof = (key: DpopKey, token: string | undefined, over: object = {}) => makeProof(key, { htu: mcp, accessToken: token, ...over });

describe('the demo Resource AS (step 3) with a bound ID-JAG', () => {
  test('without a proof, or with another key\'s proof: invalid_grant, and the ID-JAG is not spent', async () => {
    const jag = await idJag(mine);
    expect(decodeJwt(jag).cnf).toEqual({ jkt: mine.jkt });
    const none = await grant(jag);
    expect({ status: none.status, error: none.body.error }).toEqual({ status: 400, error: 'invalid_grant' });
    expect(none.body.error_description).toMatch(`bound to a DPoP key (cnf.jkt ${mine.jkt})`);
    const other = await grant(jag, await asProof(theirs));
    expect({ status: other.status, error: other.body.error }).toEqual({ status: 400, error: 'invalid_grant' });
    expect(other.body.error_description).toMatch(`signed by key ${theirs.jkt}, but this ID-JAG is bound to key ${mine.jkt}`);
    // a proof by the right key, but for the IdP's token endpoint: a faulty proof is invalid_dpop_proof
    const misdirected = await grant(jag, await makeProof(mine, { htu: `${idjag.issuer}/token` }));
    expect({ status: misdirected.status, error: misdirected.body.error }).toEqual({ status: 400, error: 'invalid_dpop_proof' });

    const ok = await grant(jag, await asProof(mine));
    expect(ok.status).toBe(200);
    expect(ok.body.token_type).toBe('DPoP');
    expect(decodeJwt(ok.body.access_token!)).toMatchObject({ cnf: { jkt: mine.jkt }, aud: mcp });
  });

  test('a proof already used is refused, even with a fresh ID-JAG', async () => {
    const proof = await asProof(mine);
    expect((await grant(await idJag(mine), proof)).status).toBe(200);
    const again = await grant(await idJag(mine), proof);
    expect({ status: again.status, error: again.body.error }).toEqual({ status: 400, error: 'invalid_dpop_proof' });
    expect(again.body.error_description).toMatch(/already used/);
  });

  test('an unbound ID-JAG: with a proof the access token is bound to it; without, a Bearer token as before', async () => {
    const bound = await grant(await idJag(), await asProof(mine));
    expect({ status: bound.status, type: bound.body.token_type, cnf: decodeJwt(bound.body.access_token!).cnf }).toEqual({ status: 200, type: 'DPoP', cnf: { jkt: mine.jkt } });
    const bearer = await grant(await idJag());
    expect({ status: bearer.status, type: bearer.body.token_type, cnf: decodeJwt(bearer.body.access_token!).cnf }).toEqual({ status: 200, type: 'Bearer', cnf: undefined });
  });

  test('its metadata advertises DPoP', async () => {
    const doc = await (await fetch(`${idjag.issuer}/.well-known/oauth-authorization-server/demo/as`)).json() as Record<string, unknown>;
    expect(doc.dpop_signing_alg_values_supported).toContain('ES256');
  });
});

describe('the demo MCP server (step 4) with a DPoP-bound access token', () => {
  let token: string;
  beforeAll(async () => {
    const res = await grant(await idJag(mine), await asProof(mine));
    token = res.body.access_token!;
  });

  test('with the DPoP scheme and a proof by its key carrying ath: served', async () => {
    const res = await call({ authorization: `DPoP ${token}`, dpop: await mcpProof(mine, token) });
    expect(res.status).toBe(200);
    expect(res.body.result.serverInfo.name).toBe('idjag-demo-todos');
  });

  const refusals: [string, () => Promise<Record<string, string>>, string, RegExp][] = [
    ['presented as a Bearer token', async () => ({ authorization: `Bearer ${token}` }), 'invalid_token', /DPoP-bound: present it as 'Authorization: DPoP <token>'/],
    ['the DPoP scheme without a proof', async () => ({ authorization: `DPoP ${token}` }), 'invalid_dpop_proof', /DPoP header is missing/],
    ['a proof by another key', async () => ({ authorization: `DPoP ${token}`, dpop: await mcpProof(theirs, token) }), 'invalid_token', /signed by another key/],
    ['a proof without ath', async () => ({ authorization: `DPoP ${token}`, dpop: await mcpProof(mine, undefined) }), 'invalid_dpop_proof', /no ath claim/],
    ['a proof for another URI', async () => ({ authorization: `DPoP ${token}`, dpop: await mcpProof(mine, token, { htu: `${asIssuer}/token` }) }), 'invalid_dpop_proof', /htu is/],
    ['a proof for another method', async () => ({ authorization: `DPoP ${token}`, dpop: await mcpProof(mine, token, { htm: 'GET' }) }), 'invalid_dpop_proof', /htm is GET/],
  ];

  test.each(refusals.map(([name, headers, error, says]) => ({ name, headers, error, says })))('$name: 401 $error with a DPoP challenge', async ({ headers, error, says }) => {
    const res = await call(await headers());
    expect(res.status).toBe(401);
    expect(res.challenge).toMatch(new RegExp(`^DPoP error="${error}", error_description="[^"]*", algs="ES256 [^"]*", resource_metadata="`));
    expect(res.challenge).toMatch(says);
    expect(res.body).toMatchObject({ error });
  });

  test('a proof already used is refused', async () => {
    const proof = await mcpProof(mine, token);
    expect((await call({ authorization: `DPoP ${token}`, dpop: proof })).status).toBe(200);
    const again = await call({ authorization: `DPoP ${token}`, dpop: proof });
    expect(again.status).toBe(401);
    expect(again.challenge).toMatch(/^DPoP error="invalid_dpop_proof", error_description="this DPoP proof was already used/);
  });

  test('an unbound token: as a Bearer token it is served, with the DPoP scheme it is refused', async () => {
    const bearer = (await grant(await idJag())).body.access_token!;
    expect((await call({ authorization: `Bearer ${bearer}` })).status).toBe(200);
    const res = await call({ authorization: `DPoP ${bearer}`, dpop: await mcpProof(mine, bearer) });
    expect(res.status).toBe(401);
    expect(res.challenge).toMatch(/^Bearer error="invalid_token", error_description="this access token is not DPoP-bound/);
  });
});

describe('npm run demo:client -- --dpop: the official MCP client, bound from end to end', () => {
  let run: DemoClientResult;
  const printed: string[] = [];
  beforeAll(async () => {
    run = await runDemoClient({ issuer: idjag.issuer, username: 'alice', password: 'alice', todo: 'Bind the chain', dpop: true, log: (l) => printed.push(l) });
  });

  test('the ID-JAG and the access token name the client\'s key, and the tools ran', () => {
    expect(run.dpopJkt).toMatch(/^[\w-]{43}$/);
    expect(run.idJag.cnf).toEqual({ jkt: run.dpopJkt });
    expect(run.accessToken.cnf).toEqual({ jkt: run.dpopJkt });
    expect(run.calls.map((c) => c.tool)).toEqual(['list_todos', 'add_todo', 'list_todos']);
    expect(run.calls[1]!.structured).toMatchObject({ added: { text: 'Bind the chain' } });
  });

  test('on the wire: a proof with the exchange, with the JWT-bearer grant, and with every authorized MCP request', () => {
    const x = run.exchanges;
    const exchangeReq = x.find((e) => e.url === `${idjag.issuer}/token` && /token-exchange/.test(e.requestBody))!;
    expect(exchangeReq).toMatchObject({ status: 200, dpop: expect.any(String) });
    expect(decodeJwt(exchangeReq.dpop!)).toMatchObject({ htm: 'POST', htu: `${idjag.issuer}/token` });
    const grantReq = x.find((e) => e.url === `${asIssuer}/token`)!;
    expect(grantReq).toMatchObject({ status: 200, dpop: expect.any(String) });
    expect(JSON.parse(grantReq.responseBody)).toMatchObject({ token_type: 'DPoP' });
    const authorized = x.filter((e) => e.url === mcp && e.authorization !== undefined);
    expect(authorized.length).toBeGreaterThan(3);
    for (const e of authorized) {
      expect(e.authorization).toMatch(/^DPoP /);
      expect(decodeJwt(e.dpop!)).toMatchObject({ htm: e.method, htu: mcp, ath: expect.any(String) });
    }
    // every proof is fresh
    const jtis = x.filter((e) => e.dpop).map((e) => decodeJwt(e.dpop!).jti);
    expect(new Set(jtis).size).toBe(jtis.length);
  });

  test('the printed trace shows the proofs and the key, never a whole token', () => {
    const text = printed.join('\n');
    expect(text).toContain(`thumbprint ${run.dpopJkt}`);
    expect(text).toMatch(/DPoP: eyJ.{13}…\(JWT, \d+ chars\)/);
    expect(text).toMatch(/Authorization: DPoP eyJ/);
    expect(text).toMatch(/"token_type": "DPoP"/);
    expect(text).not.toMatch(/eyJ[\w-]{20,}\.[\w-]{20,}\.[\w-]{20,}/);
  });
});
