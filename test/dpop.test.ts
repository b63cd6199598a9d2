/**
 * DPoP (RFC 9449) at the token exchange, over real HTTP (draft §9.8.1): a valid proof binds the ID-JAG with
 * cnf.jkt; every faulty proof is 400 invalid_dpop_proof with an audit row and nothing issued; a proof is good
 * once (on every node: the replay store is the database); a client registered with dpop_bound_access_tokens
 * must send one; with nonces configured, use_dpop_nonce and the DPoP-Nonce header (§8). The simulator, the
 * admin API and the client's diagnostics say the same.
 */
import { request } from 'node:http';
import { calculateJwkThumbprint, decodeJwt } from 'jose';
import { decodeChecks } from '../src/audit/codec.ts';
import { DPOP_ALGS } from '../src/dpop/proof.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { adminSignIn } from './helpers/admin-ui.ts';
import { auditCount, lastAuditRow } from './helpers/audit.ts';
import { basic, DEMO_AGENT, signIn } from './helpers/browser.ts';
import { dpopKey, makeProof, type DpopKey } from './helpers/dpop.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let api: AdminClient;
let idToken: string;
let key: DpopKey;
let htu: string;

beforeAll(async () => {
  idjag = await startTestServer();
  api = await connectAdmin(idjag.url);
  idToken = (await signIn(idjag.url)).tokens.id_token as string;
  key = await dpopKey();
  // the token endpoint as discovery names it: from the configured issuer, not the address the test connects to
  htu = `${idjag.issuer}/token`;
});
afterAll(() => idjag.dispose());

/** The same URL under another name for this machine: a proof for it is not a proof for the issuer's URL. */
const otherHost = (url: string) => {
  const u = new URL(url);
  u.hostname = u.hostname === 'localhost' ? '127.0.0.1' : 'localhost';
  return u.href;
};

const withProof = (proof: string) => exchange(idjag.url, idToken, {}, DEMO_AGENT, { DPoP: proof });

/** The newest audit row's decision and its dpop_proof check. */
async function audited() {
  const row = await lastAuditRow(idjag);
  return { row, dpop: decodeChecks(row.checks).find((c) => c.name === 'dpop_proof') };
}

test('discovery advertises the algorithms the exchange accepts in a proof', async () => {
  const doc = await (await fetch(`${idjag.url}/.well-known/openid-configuration`)).json() as Record<string, unknown>;
  expect(doc.dpop_signing_alg_values_supported).toEqual([...DPOP_ALGS]);
  expect(doc.token_endpoint).toBe(htu);
});

test('a valid proof: the ID-JAG carries cnf.jkt, the RFC 7638 thumbprint of the proof\'s key, and the audit row names it', async () => {
  const res = await withProof(await makeProof(key, { htu }));
  expect(res.status).toBe(200);
  const claims = decodeJwt(res.body.access_token as string);
  expect(claims.cnf).toEqual({ jkt: await calculateJwkThumbprint(key.publicJwk, 'sha256') });
  expect(claims.cnf).toEqual({ jkt: key.jkt });
  expect(res.body.token_type).toBe('N_A');
  const { row, dpop } = await audited();
  // the row's id is the jti, stored once (src/audit/codec.ts, encodeOwnId)
  expect(row).toMatchObject({ decision: 'issued', id: claims.jti, jti: '' });
  expect(dpop).toEqual({ name: 'dpop_proof', status: 'passed', message: expect.stringContaining(`cnf.jkt ${key.jkt}`) });
});

test('each algorithm of the allow-list other than ES256 binds too (Ed25519, PS256)', async () => {
  for (const alg of ['Ed25519', 'PS256']) {
    const k = await dpopKey(alg);
    const res = await withProof(await makeProof(k, { htu }));
    expect({ alg, status: res.status, cnf: decodeJwt(res.body.access_token as string).cnf }).toEqual({ alg, status: 200, cnf: { jkt: k.jkt } });
  }
});

test('without a proof: an unbound ID-JAG, and no dpop_proof check in the audit row', async () => {
  const res = await exchange(idjag.url, idToken);
  expect(res.status).toBe(200);
  expect(decodeJwt(res.body.access_token as string).cnf).toBeUndefined();
  expect((await audited()).dpop).toBeUndefined();
});

describe('a faulty proof is 400 invalid_dpop_proof, audited, and issues nothing', () => {
  const now = () => Math.floor(Date.now() / 1000);
  const cases: [string, () => Promise<string>, RegExp][] = [
    ['not a JWT', async () => 'not-a-jwt', /not a JWT/],
    ['a proof for the same endpoint under another host name than the issuer\'s', () => makeProof(key, { htu: otherHost(htu) }), /htu is http:\/\/localhost:\d+\/token; this request is for http:\/\/127\.0\.0\.1:\d+\/token/],
    ['a proof for another endpoint', () => makeProof(key, { htu: `${idjag.issuer}/userinfo` }), /htu is .*\/userinfo/],
    ['a proof for another method', () => makeProof(key, { htu, htm: 'GET' }), /htm is GET; this request is a POST/],
    ['a stale iat', () => makeProof(key, { htu, iat: now() - 3600 }), /made 360[01] s ago/],
    ['an iat in the future', () => makeProof(key, { htu, iat: now() + 600 }), /in the future/],
    ['a private key in the jwk', () => makeProof(key, { htu, header: { jwk: key.privateJwk } }), /private key material/],
    ['a symmetric alg', () => makeProof(key, { htu, header: { alg: 'HS256', jwk: { kty: 'oct', k: 'c2VjcmV0' } }, signWith: new TextEncoder().encode('a-shared-secret-of-32-bytes-long') }), /symmetric alg HS256/],
    ['typ JWT', () => makeProof(key, { htu, header: { typ: 'JWT' } }), /typ is "JWT"/],
    ['signed by another key than its jwk', async () => makeProof(key, { htu, signWith: (await dpopKey()).privateKey }), /signature does not verify/],
    ['no jti', () => makeProof(key, { htu, claims: { jti: undefined } }), /no jti claim/],
  ];

  test.each(cases.map(([name, make, says]) => ({ name, make, says })))('$name', async ({ make, says }) => {
    const before = await auditCount(idjag);
    const res = await withProof(await make());
    expect({ status: res.status, error: res.body.error, token: res.body.access_token }).toEqual({ status: 400, error: 'invalid_dpop_proof', token: undefined });
    expect(res.body.error_description).toMatch(says);
    expect(res.body.error_description).toMatch(/\(failed check: dpop_proof; RFC 9449 §4\.3/);
    expect(await auditCount(idjag)).toBe(before + 1);
    const { row, dpop } = await audited();
    expect(row).toMatchObject({ decision: 'denied', reason: 'dpop_proof', error: 'invalid_dpop_proof', jti: null, sub: null });
    expect(dpop).toMatchObject({ status: 'failed', message: expect.stringMatching(says) });
    // refused before the subject token was looked at
    expect(decodeChecks(row.checks).filter((c) => c.name.startsWith('id_token.')).every((c) => c.status === 'not_reached')).toBe(true);
  });

  test('a replayed proof: the first use binds, the second is refused (reason dpop_replay)', async () => {
    const proof = await makeProof(key, { htu });
    expect((await withProof(proof)).status).toBe(200);
    const again = await withProof(proof);
    expect({ status: again.status, error: again.body.error }).toEqual({ status: 400, error: 'invalid_dpop_proof' });
    expect(again.body.error_description).toMatch(/already used/);
    const { row, dpop } = await audited();
    expect(row).toMatchObject({ decision: 'denied', reason: 'dpop_replay' });
    expect(dpop).toMatchObject({ status: 'failed', explanation: expect.stringContaining(key.jkt) });
  });

  test('ten requests racing with one proof: exactly one ID-JAG', async () => {
    const proof = await makeProof(key, { htu });
    const results = await Promise.all(Array.from({ length: 10 }, () => withProof(proof)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    for (const lost of results.filter((r) => r.status !== 200)) expect({ status: lost.status, error: lost.body.error }).toEqual({ status: 400, error: 'invalid_dpop_proof' });
  });

  test('two DPoP headers', async () => {
    const proofs = [await makeProof(key, { htu }), await makeProof(key, { htu })];
    const body = new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', requested_token_type: 'urn:ietf:params:oauth:token-type:id-jag',
      subject_token: idToken, subject_token_type: 'urn:ietf:params:oauth:token-type:id_token', audience: TODO_AS, resource: TODO_MCP,
    }).toString();
    const url = new URL(`${idjag.url}/token`);
    // fetch joins repeated headers into one; node:http sends each on its own line, as a client may
    const answer = await new Promise<{ status: number; body: Record<string, string> }>((resolve, reject) => {
      const req = request({
        host: url.hostname, port: url.port, path: url.pathname, method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(DEMO_AGENT.id, DEMO_AGENT.secret), dpop: proofs },
      }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => { text += d.toString(); });
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as Record<string, string> }));
      });
      req.on('error', reject);
      req.end(body);
    });
    expect(answer.status).toBe(400);
    expect(answer.body).toMatchObject({ error: 'invalid_dpop_proof', error_description: expect.stringMatching(/2 DPoP headers/) });
  });
});

describe('a client registered with dpop_bound_access_tokens (RFC 9449 §5.2)', () => {
  beforeAll(async () => {
    const res = await api.patch('/clients/demo-agent', { dpop_bound_access_tokens: true });
    expect(res.status).toBe(200);
    expect(res.body.dpop_bound_access_tokens).toBe(true);
  });
  afterAll(async () => {
    expect((await api.patch('/clients/demo-agent', { dpop_bound_access_tokens: null })).status).toBe(200);
  });

  test('no proof: 400 invalid_dpop_proof, audited', async () => {
    const res = await exchange(idjag.url, idToken);
    expect({ status: res.status, error: res.body.error }).toEqual({ status: 400, error: 'invalid_dpop_proof' });
    expect(res.body.error_description).toMatch(/registered with dpop_bound_access_tokens/);
    const { row, dpop } = await audited();
    expect(row).toMatchObject({ decision: 'denied', reason: 'dpop_proof', client_id: 'demo-agent' });
    expect(dpop).toMatchObject({ status: 'failed' });
  });

  test('with a proof: a bound ID-JAG', async () => {
    const res = await withProof(await makeProof(key, { htu }));
    expect(res.status).toBe(200);
    expect(decodeJwt(res.body.access_token as string).cnf).toEqual({ jkt: key.jkt });
  });

  test('the simulator refuses the same way without a proof, and with an assumed one previews cnf.jkt', async () => {
    const without = await api.post('/simulate', { client_id: 'demo-agent', user: 'alice', audience: TODO_AS, resource: TODO_MCP });
    expect(without.body).toMatchObject({ decision: 'denied', reason: 'dpop_proof', error: 'invalid_dpop_proof' });
    expect(without.body.checks.find((c: { name: string }) => c.name === 'dpop_proof')).toMatchObject({ status: 'failed', section: expect.stringMatching(/RFC 9449/) });
    const withKey = await api.post('/simulate', { client_id: 'demo-agent', user: 'alice', audience: TODO_AS, resource: TODO_MCP, dpop_jkt: key.jkt });
    expect(withKey.body).toMatchObject({ decision: 'issued', id_jag: { cnf: { jkt: key.jkt } } });
    expect(withKey.body.assumptions).toContain(`a valid DPoP proof by the key ${key.jkt} accompanies the request`);
  });

  test('the setting is part of the client document: exported, and refused when not a boolean', async () => {
    const doc = (await api.get('/clients/demo-agent')).body;
    expect(doc.dpop_bound_access_tokens).toBe(true);
    const bad = await api.patch('/clients/demo-agent', { dpop_bound_access_tokens: 'yes' });
    expect(bad.status).toBe(400);
  });
});

test('the simulator: a proof is optional, and its thumbprint must look like one', async () => {
  const bare = await api.post('/simulate', { client_id: 'demo-agent', user: 'alice', audience: TODO_AS, resource: TODO_MCP, dpop: true });
  expect(bare.body).toMatchObject({ decision: 'issued', id_jag: { cnf: { jkt: expect.stringMatching(/thumbprint/) } } });
  const none = await api.post('/simulate', { client_id: 'demo-agent', user: 'alice', audience: TODO_AS, resource: TODO_MCP });
  expect(none.body.id_jag.cnf).toBeUndefined();
  expect(none.body.checks.map((c: { name: string }) => c.name)).not.toContain('dpop_proof');
  const bad = await api.post('/simulate', { client_id: 'demo-agent', user: 'alice', audience: TODO_AS, dpop_jkt: 'not-a-thumbprint' });
  expect(bad.status).toBe(400);
});

test('the client\'s own diagnostics show the dpop_proof check with its sections', async () => {
  expect((await withProof('not-a-jwt')).status).toBe(400);
  const res = await fetch(`${idjag.url}/conformance/clients/demo-agent?format=json`, { headers: { authorization: basic(DEMO_AGENT.id, DEMO_AGENT.secret) } });
  const { attempts } = await res.json() as { attempts: { failed_check: string | null; error: string; checks: { name: string; section?: string }[] }[] };
  expect(attempts[0]).toMatchObject({ failed_check: 'dpop_proof', error: 'invalid_dpop_proof' });
  expect(attempts[0]!.checks.find((c) => c.name === 'dpop_proof')?.section).toMatch(/RFC 9449 §4\.3.*§9\.8\.1/);
});

test('in the admin UI: the client page sets dpop_bound_access_tokens, and the simulator assumes a proof and previews cnf.jkt', async () => {
  const ui = await adminSignIn(idjag.url);
  await ui.open('/admin/clients/new');
  const form = { client_id: 'dpop-ui', client_name: 'DPoP UI', type: 'confidential', grant_types: 'authorization_code', redirect_uris: 'https://dpop.example/cb' };
  expect((await ui.post('/admin/clients', { ...form, dpop_bound_access_tokens: 'on' })).status).toBe(200);
  expect((await api.get('/clients/dpop-ui')).body.dpop_bound_access_tokens).toBe(true);
  const page = await ui.open('/admin/clients/dpop-ui');
  expect(page.html).toMatch(/name="dpop_bound_access_tokens" checked/);
  expect((await ui.post('/admin/clients/dpop-ui', { client_name: 'DPoP UI', token_endpoint_auth_method: 'client_secret_basic', grant_types: 'authorization_code', redirect_uris: 'https://dpop.example/cb' })).status).toBe(303);
  expect((await api.get('/clients/dpop-ui')).body.dpop_bound_access_tokens).toBeUndefined();

  const q = new URLSearchParams({ run: '1', client_id: 'demo-agent', user: 'alice', audience: TODO_AS, resource: TODO_MCP, dpop: 'on', dpop_jkt: key.jkt });
  const sim = await ui.open(`/admin/simulate?${q}`);
  expect(sim.html).toContain(`<dt><code>cnf.jkt</code></dt><dd><code>${key.jkt}</code>`);
  expect(sim.html).toContain('<code>dpop_proof</code>');
});

describe('with server nonces (--dpop-nonce, RFC 9449 §8)', () => {
  let nonced: TestServer;
  let token: string;
  beforeAll(async () => {
    nonced = await startTestServer({ dpopNonce: true });
    token = (await signIn(nonced.url)).tokens.id_token as string;
  });
  afterAll(() => nonced.dispose());

  test('a proof without a nonce: 400 use_dpop_nonce with a DPoP-Nonce header; signed again with it: bound, and the next nonce comes along', async () => {
    const target = `${nonced.issuer}/token`;
    const first = await exchange(nonced.url, token, {}, DEMO_AGENT, { DPoP: await makeProof(key, { htu: target }) });
    expect({ status: first.status, error: first.body.error }).toEqual({ status: 400, error: 'use_dpop_nonce' });
    const nonce = first.headers.get('dpop-nonce');
    expect(nonce).toMatch(/^\d+\.[\w-]{43}$/);
    expect(await lastAuditRow(nonced)).toMatchObject({ decision: 'denied', reason: 'dpop_nonce', error: 'use_dpop_nonce' });

    const second = await exchange(nonced.url, token, {}, DEMO_AGENT, { DPoP: await makeProof(key, { htu: target, nonce: nonce! }) });
    expect(second.status).toBe(200);
    expect(decodeJwt(second.body.access_token as string).cnf).toEqual({ jkt: key.jkt });
    expect(second.headers.get('dpop-nonce')).toMatch(/^\d+\.[\w-]{43}$/);

    const forged = await exchange(nonced.url, token, {}, DEMO_AGENT, { DPoP: await makeProof(key, { htu: target, nonce: `${nonce!.split('.')[0]}.${'A'.repeat(43)}` }) });
    expect({ status: forged.status, error: forged.body.error }).toEqual({ status: 400, error: 'use_dpop_nonce' });
  });

  test('an exchange without DPoP does not need a nonce', async () => {
    expect((await exchange(nonced.url, token)).status).toBe(200);
  });
});
