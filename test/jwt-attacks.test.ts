/**
 * The JWT attacks on the subject token that test/exchange-errors.test.ts does not already cover (alg none, HS256
 * with the public key, unknown kid, an ID-JAG as ID Token, a forged signature, another `iss` signed with the real
 * key are there). Each is one real token exchange refused with `invalid_grant`, no token, one denied audit row
 * naming the failed check; the key-locating headers (`jku`, `x5u`, `jwk`, `x5c`) point at or embed an attacker's
 * keys, served by a local server that records every request: it must never be contacted.
 */
import { createPrivateKey, createSign } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK, SignJWT,
  type CryptoKey, type JWK, type JWTPayload,
} from 'jose';
import { basic, signIn, type TokenResponse } from './helpers/browser.ts';
import { exchange, REFRESH_TOKEN } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { auditCount as countAudit } from './helpers/audit.ts';
import { decodeChecks } from '../src/audit/codec.ts';

let idjag: TestServer;
let alice: Awaited<ReturnType<typeof signIn>>;
let idTokenKey: { kid: string; jwk: JWK };

/** The attacker: an RSA key pair of its own, published as a JWKS (and an issuer's metadata) on a local server that records every hit. */
let attacker: { url: string; server: Server; hits: string[]; privateKey: CryptoKey; publicJwk: JWK; kid: string };

beforeAll(async () => {
  idjag = await startTestServer();
  alice = await signIn(idjag.url, { scope: 'openid email profile offline_access', prompt: 'consent' });
  const row = await idjag.database.db.selectFrom('signing_keys').select(['kid', 'private_jwk'])
    .where('purpose', '=', 'id_token').where('retired_at', 'is', null).executeTakeFirstOrThrow();
  idTokenKey = { kid: row.kid, jwk: JSON.parse(row.private_jwk) as JWK };

  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  const hits: string[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    hits.push(`${req.method} ${req.url}`);
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    res.setHeader('content-type', 'application/json');
    if (req.url === '/.well-known/openid-configuration') res.end(JSON.stringify({ issuer: url, jwks_uri: `${url}/jwks` }));
    else if (req.url === '/x5u') res.end('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    else res.end(JSON.stringify({ keys: [{ ...publicJwk, kid, alg: 'RS256', use: 'sig' }] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  attacker = { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, hits, privateKey, publicJwk: { ...publicJwk, kid, alg: 'RS256' }, kid };
});

afterAll(async () => {
  await new Promise((resolve) => attacker.server.close(resolve));
  await idjag.dispose();
});

const db = () => idjag.database.db;
const auditCount = () => countAudit(idjag);
const issuedCount = async () => Number((await db().selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).where('decision', '=', 'issued').executeTakeFirstOrThrow()).n);
const aliceClaims = () => decodeJwt(alice.tokens.id_token);
const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** Signs with `key` (the attacker's by default) under the real token's header with `header` merged over it. */
async function sign(claims: JWTPayload, header: Record<string, unknown>, key: CryptoKey | Uint8Array = attacker.privateKey): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ ...decodeProtectedHeader(alice.tokens.id_token), ...header } as never).sign(key);
}
const realKey = async () => importJWK(idTokenKey.jwk, 'RS256') as Promise<CryptoKey>;

/**
 * One exchange that must be refused: 400 invalid_grant, no token of any kind, nothing issued, exactly one new
 * audit row (denied, the expected check failed), and the attacker's server never contacted.
 */
async function refused(token: string, check: string, description?: RegExp, over: Record<string, string | undefined> = {}): Promise<TokenResponse> {
  const [rows, issued] = [await auditCount(), await issuedCount()];
  const res = await exchange(idjag.url, token, over);
  expect({ status: res.status, error: res.body.error }).toEqual({ status: 400, error: 'invalid_grant' });
  expect(res.body).not.toHaveProperty('access_token');
  expect(res.body).not.toHaveProperty('issued_token_type');
  if (description) expect(res.body.error_description).toMatch(description);
  expect(await issuedCount()).toBe(issued);
  expect(await auditCount()).toBe(rows + 1);
  const row = await db().selectFrom('audit_log').selectAll().orderBy('at', 'desc').orderBy('id', 'desc').limit(1).executeTakeFirstOrThrow();
  expect(row).toMatchObject({ decision: 'denied', error: 'invalid_grant', jti: null });
  const checks = decodeChecks(row.checks);
  expect(checks.filter((c) => c.status === 'failed').map((c) => c.name)).toEqual([check]);
  expect(JSON.stringify(row)).not.toContain(token);
  // a fetch the exchange started in the background would have had time to land
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(attacker.hits).toEqual([]);
  return res;
}

test('the baseline: the same claims signed with the real key under the real header are accepted', async () => {
  const res = await exchange(idjag.url, await sign(aliceClaims(), {}, await realKey()));
  expect(res.status).toBe(200);
  // and the attacker's server really answers: a fetch of a header's URL would have been recorded
  const probe = await fetch(`${attacker.url}/jwks`);
  expect((await probe.json() as { keys: JWK[] }).keys[0]!.kid).toBe(attacker.kid);
  expect(attacker.hits).toEqual(['GET /jwks']);
  attacker.hits.length = 0;
});

describe('headers that locate a key elsewhere are ignored and never fetched', () => {
  test.each([
    ['jku naming the attacker\'s JWKS', () => ({ jku: `${attacker.url}/jwks` })],
    ['x5u naming the attacker\'s certificate', () => ({ x5u: `${attacker.url}/x5u` })],
    ['jwk embedding the attacker\'s public key', () => ({ jwk: attacker.publicJwk })],
    ['x5c embedding a certificate chain', () => ({ x5c: [Buffer.from('not the IdP\'s certificate').toString('base64')] })],
    ['jku, x5u and jwk together', () => ({ jku: `${attacker.url}/jwks`, x5u: `${attacker.url}/x5u`, jwk: attacker.publicJwk })],
  ])('%s, with the attacker\'s kid: the kid is not the IdP\'s (id_token.key)', async (_name, header) => {
    const token = await sign(aliceClaims(), { ...header(), kid: attacker.kid });
    await refused(token, 'id_token.key', new RegExp(`signed with key ${attacker.kid}, which this IdP does not publish`));
  });

  test.each([
    ['jku', () => ({ jku: `${attacker.url}/jwks` })],
    ['x5u', () => ({ x5u: `${attacker.url}/x5u` })],
    ['jwk', () => ({ jwk: { ...attacker.publicJwk, kid: idTokenKey.kid } })],
  ])('%s, under the IdP\'s real kid: verified with the IdP\'s own key only, so the signature fails', async (_name, header) => {
    const token = await sign(aliceClaims(), header());
    expect(decodeProtectedHeader(token).kid).toBe(idTokenKey.kid);
    await refused(token, 'id_token.signature', /signature does not verify/);
  });

  test('jku with no kid at all (the key would have to come from the URL)', async () => {
    const token = await sign(aliceClaims(), { jku: `${attacker.url}/jwks`, kid: undefined });
    expect(decodeProtectedHeader(token).kid).toBeUndefined();
    await refused(token, 'id_token.key', /has no kid/);
  });
});

describe('a token from another issuer with a valid-looking shape and its own keys', () => {
  const foreign = () => ({ ...aliceClaims(), iss: attacker.url });

  test('its own kid, RS256, aud this client, alice\'s sub, fresh times: refused on the key, the issuer never asked', async () => {
    const token = await sign(foreign(), { kid: attacker.kid, alg: 'RS256', typ: 'JWT' });
    await refused(token, 'id_token.key');
  });

  test('under the IdP\'s kid: refused on the signature', async () => {
    await refused(await sign(foreign(), {}), 'id_token.signature');
  });

  test('naming the IdP as issuer but signed with the other issuer\'s key under its kid', async () => {
    await refused(await sign(aliceClaims(), { kid: attacker.kid }), 'id_token.key');
  });
});

describe('crit', () => {
  test.each([
    ['an unknown extension', { crit: ['urn:example:ext'], 'urn:example:ext': true }],
    ['exp marked critical', { crit: ['exp'], exp: 1 }],
    ['b64: false (RFC 7797 unencoded payload)', { crit: ['b64'], b64: false }],
    ['an empty list', { crit: [] }],
  ])('crit with %s, signed with the real key, is refused (id_token.format)', async (_name, header) => {
    const [h, p] = [enc({ ...decodeProtectedHeader(alice.tokens.id_token), ...header }), alice.tokens.id_token.split('.')[1]!];
    // signed by hand: the header must reach the IdP exactly as written (jose refuses to sign some of these)
    const key = createPrivateKey({ key: idTokenKey.jwk as never, format: 'jwk' });
    const signature = createSign('RSA-SHA256').update(`${h}.${p}`).sign(key).toString('base64url');
    await refused(`${h}.${p}.${signature}`, 'id_token.format', /crit parameter/);
  });
});

describe('the wrong typ', () => {
  test.each(['at+jwt', 'application/at+jwt', 'logout+jwt', 'oauth-id-jag+jwt', 'secevent+jwt', 'JOSE'])('typ %s, signed with the real key', async (typ) => {
    await refused(await sign(aliceClaims(), { typ }, await realKey()), 'id_token.format', new RegExp(`typ ${typ.replace('+', '\\+')}; an ID Token is expected`));
  });

  test.each(['JWT', 'jwt', 'application/jwt'])('typ %s is what an ID Token may carry (the control case)', async (typ) => {
    expect((await exchange(idjag.url, await sign(aliceClaims(), { typ }, await realKey()))).status).toBe(200);
  });

  test('the demo Resource AS\'s access token (an at+jwt from another issuer) presented as an ID Token', async () => {
    const demoAs = idjag.demo!.asIssuer;
    const jag = await exchange(idjag.url, alice.tokens.id_token, { audience: demoAs, resource: idjag.demo!.mcpResource });
    expect(jag.status).toBe(200);
    const res = await fetch(`${idjag.url}/demo/as/token`, {
      method: 'POST',
      headers: { authorization: basic('demo-agent-at-todo', 'demo-agent-at-todo-secret'), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: jag.body.access_token }),
    });
    expect(res.status).toBe(200);
    const accessToken = (await res.json() as { access_token: string }).access_token;
    expect(decodeProtectedHeader(accessToken).typ).toBe('at+jwt');
    await refused(accessToken, 'id_token.format', /typ at\+jwt; an ID Token is expected/);
  });
});

describe('alg none in other spellings', () => {
  test.each(['None', 'NONE', 'nOnE'])('alg %s, unsigned and with the real signature kept', async (alg) => {
    const [, p, s] = alice.tokens.id_token.split('.') as [string, string, string];
    const h = enc({ ...decodeProtectedHeader(alice.tokens.id_token), alg });
    await refused(`${h}.${p}.`, 'id_token.algorithm', new RegExp(`signed with ${alg}; this IdP signs ID Tokens with RS256 only`));
    await refused(`${h}.${p}.${s}`, 'id_token.algorithm');
  });
});

describe('opaque tokens of this IdP presented as ID Tokens', () => {
  test('alice\'s access token (opaque), as an ID Token and as a refresh token', async () => {
    const at = alice.tokens.access_token as string;
    expect(at.split('.')).toHaveLength(1);
    await refused(at, 'id_token.format', /not a JWT/);
    await refused(at, 'refresh_token', undefined, { subject_token_type: REFRESH_TOKEN });
  });

  test('alice\'s refresh token, as an ID Token', async () => {
    await refused(alice.tokens.refresh_token as string, 'id_token.format', /not a JWT/);
  });

  test('the authorization code already redeemed, as an ID Token and as a refresh token', async () => {
    await refused(alice.code, 'id_token.format', /not a JWT/);
    await refused(alice.code, 'refresh_token', undefined, { subject_token_type: REFRESH_TOKEN });
  });
});

describe('truncated and padded encodings of alice\'s real ID Token', () => {
  const parts = () => alice.tokens.id_token.split('.') as [string, string, string];
  test.each([
    ['the last character of the signature cut', () => alice.tokens.id_token.slice(0, -1), 'id_token.signature'],
    ['half of the signature cut', () => { const [h, p, s] = parts(); return `${h}.${p}.${s.slice(0, s.length / 2)}`; }, 'id_token.signature'],
    ['the signature segment cut (two segments)', () => { const [h, p] = parts(); return `${h}.${p}`; }, 'id_token.format'],
    ['the payload cut in the middle', () => { const [h, p, s] = parts(); return `${h}.${p.slice(0, Math.floor(p.length / 2))}.${s}`; }, 'id_token.signature'],
    ['the header alone', () => parts()[0], 'id_token.format'],
    ['cut inside the header', () => alice.tokens.id_token.slice(0, 10), 'id_token.format'],
    ['"=" padding on the signature', () => `${alice.tokens.id_token}==`, 'id_token.format'],
    ['"=" padding on the header', () => { const [h, p, s] = parts(); return `${h}=.${p}.${s}`; }, 'id_token.format'],
    ['"=" padding on the payload', () => { const [h, p, s] = parts(); return `${h}.${p}=.${s}`; }, 'id_token.format'],
    ['base64 (+ and /) instead of base64url in the signature', () => {
      const [h, p, s] = parts();
      const std = Buffer.from(s, 'base64url').toString('base64');
      if (!/[+/=]/.test(std)) throw new Error('this signature has no + / or = in base64: pick another case');
      return `${h}.${p}.${std}`;
    }, 'id_token.format'],
    ['a trailing newline', () => `${alice.tokens.id_token}\n`, 'id_token.format'],
    ['a leading space', () => ` ${alice.tokens.id_token}`, 'id_token.format'],
    ['an extra empty segment', () => `${alice.tokens.id_token}.`, 'id_token.format'],
    ['an extra segment (four parts)', () => `${alice.tokens.id_token}.${parts()[2]}`, 'id_token.format'],
    ['the payload repeated with a signature of another token', () => { const [h, , s] = parts(); return `${h}.${enc({ ...aliceClaims(), sub: 'admin' })}.${s}`; }, 'id_token.signature'],
  ] as [string, () => string, string][])('%s', async (_name, make, check) => {
    const token = make();
    expect(token).not.toBe(alice.tokens.id_token);
    await refused(token, check);
  });

  test('JWS JSON serialization (flattened) of the real token', async () => {
    const [h, p, s] = parts();
    await refused(JSON.stringify({ protected: h, payload: p, signature: s }), 'id_token.format', /not a JWT/);
  });
});

test('kids that look like paths, queries or URLs are names, not places (nothing is looked up with them)', async () => {
  for (const kid of ['../../../../etc/passwd', "' OR '1'='1", `${attacker.url}/jwks`, 'file:///etc/passwd', '']) {
    await refused(await sign(aliceClaims(), { kid }), 'id_token.key');
  }
});

test('the attacker\'s server was never contacted by the IdP', () => {
  expect(attacker.hits).toEqual([]);
});
