/**
 * The ID Token as subject token, checked against a key set made here: each way a token can be wrong fails
 * its own check, and stops the checks after it.
 */
import { base64url, SignJWT, type JWTPayload } from 'jose';
import { CheckList, ExchangeRejection, ID_TOKEN_CHECKS } from '../../src/exchange/checks.ts';
import { CLOCK_SKEW, validateIdToken, type Identified } from '../../src/exchange/subject.ts';
import type { KeySet } from '../../src/oidc/keys.ts';
import { CLIENT_ID, expectStoppedAt, ISSUER, NOW, signingKey } from './fixtures.ts';

type Key = Awaited<ReturnType<typeof signingKey>>;
let key: Key;
let stranger: Key;
let keys: KeySet;

beforeAll(async () => {
  [key, stranger] = await Promise.all([signingKey('id_token'), signingKey('id_token')]);
  // an ID-JAG key in the set: the right kid for the wrong purpose must not verify an ID Token
  const jagKey = await signingKey('id_jag');
  keys = { keys: [key, jagKey], fingerprint: `${key.kid}:a,${jagKey.kid}:a` };
});

const claims = (over: JWTPayload = {}): JWTPayload => ({
  iss: ISSUER, aud: CLIENT_ID, sub: 'sub-alice', iat: NOW - 60, exp: NOW + 3600, auth_time: NOW - 120, amr: ['pwd'], acr: 'urn:acr:1', ...over,
});

/** An ID Token as this IdP signs one, with `header` and `payload` changed. */
function signed(payload: JWTPayload = claims(), header: Record<string, unknown> = {}, by: Key = key): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: key.kid, ...header }).sign(by.privateKey);
}

const segment = (v: unknown) => base64url.encode(JSON.stringify(v));
/** A token no signer would make: arbitrary header, claims and signature segment. */
const forged = (header: unknown, payload: unknown = claims(), signature = 'c2lnbmF0dXJl') => `${segment(header)}.${segment(payload)}.${signature}`;

async function check(token: string, clientId = CLIENT_ID): Promise<{ checks: CheckList; result?: Identified; rejection?: ExchangeRejection }> {
  const checks = new CheckList(ID_TOKEN_CHECKS);
  try {
    return { checks, result: await validateIdToken({ subjectToken: token, clientId }, checks, { issuer: ISSUER, keys }, NOW) };
  } catch (err) {
    if (!(err instanceof ExchangeRejection)) throw err;
    return { checks, rejection: err };
  }
}

async function expectRefused(token: string | Promise<string>, failed: string, says: RegExp, clientId = CLIENT_ID) {
  const { checks, rejection } = await check(await token, clientId);
  expect(rejection).toMatchObject({ check: failed, error: 'invalid_grant', reason: failed });
  expect(rejection?.description).toMatch(says);
  expectStoppedAt(checks, ID_TOKEN_CHECKS, failed);
}

test('a valid ID Token: every check passes, and it names the user and how they signed in', async () => {
  const { checks, result } = await check(await signed());
  expect(checks.results.every((c) => c.status === 'passed')).toBe(true);
  expect(checks.results.find((c) => c.name === 'id_token.key')?.message).toBe(key.kid);
  expect(result).toEqual({ sub: 'sub-alice', auth: { authTime: NOW - 120, amr: ['pwd'], acr: 'urn:acr:1' } });
});

test('typ JWT, several audiences with azp this client, and no sign-in claims are fine', async () => {
  const { checks, result } = await check(await signed(claims({ aud: ['other', CLIENT_ID], azp: CLIENT_ID, auth_time: undefined, amr: undefined, acr: undefined }), { typ: 'JWT' }));
  expect(checks.results.every((c) => c.status === 'passed')).toBe(true);
  expect(result).toEqual({ sub: 'sub-alice', auth: {} });
});

describe('id_token.format', () => {
  test('an encrypted JWT (five parts)', () => expectRefused('a.b.c.d.e', 'id_token.format', /encrypted JWT \(JWE\)/));
  test.each(['not-a-jwt', 'a.b', 'a.b.c.d', 'a b.c.d', 'a.b.c=', '..'])('not a JWT: %j', (token) =>
    expectRefused(token, 'id_token.format', /not a JWT: expected three base64url segments/));
  test('a header that is not JSON', () => expectRefused(`${base64url.encode('not json')}.${segment(claims())}.c2ln`, 'id_token.format', /JOSE header is not valid base64url-encoded JSON/));
  test('the typ of an ID-JAG', () => expectRefused(signed(claims(), { typ: 'oauth-id-jag+jwt' }), 'id_token.format', /typ oauth-id-jag\+jwt; an ID Token is expected/));
  test('a crit parameter', () => expectRefused(forged({ alg: 'RS256', kid: 'k', crit: ['exp'], exp: 1 }), 'id_token.format', /crit parameter/));
});

describe('id_token.algorithm', () => {
  test('alg none (an empty signature)', () => expectRefused(forged({ alg: 'none' }, claims(), ''), 'id_token.algorithm', /unsigned \(alg none\)/));
  test('HS256, keyed with the public key', async () => {
    const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: key.kid }).sign(new TextEncoder().encode(JSON.stringify(key.publicJwk)));
    await expectRefused(token, 'id_token.algorithm', /signed with HS256; this IdP signs ID Tokens with RS256 only/);
  });
});

describe('id_token.key', () => {
  test('a kid this IdP does not publish', () => expectRefused(signed(claims(), { kid: 'someone-elses' }), 'id_token.key', /signed with key someone-elses, which this IdP does not publish/));
  test('the kid of the ID-JAG key', () => expectRefused(signed(claims(), { kid: keys.keys[1]!.kid }), 'id_token.key', /does not publish for ID Tokens/));
  test('no kid', () => expectRefused(new SignJWT(claims()).setProtectedHeader({ alg: 'RS256' }).sign(key.privateKey), 'id_token.key', /has no kid/));
});

describe('id_token.signature', () => {
  test('signed by another key under this IdP\'s kid', () => expectRefused(signed(claims(), {}, stranger), 'id_token.signature', /signature does not verify/));
  test('a valid token with its claims swapped', async () => {
    const [header, , signature] = (await signed()).split('.');
    await expectRefused(`${header}.${segment(claims({ sub: 'sub-admin' }))}.${signature}`, 'id_token.signature', /signature does not verify/);
  });
});

describe('claims', () => {
  test('another issuer', () => expectRefused(signed(claims({ iss: 'https://evil.example' })), 'id_token.issuer', /issued by "https:\/\/evil.example", not by this IdP/));
  test('an audience without this client', () => expectRefused(signed(claims({ aud: 'other-client' })), 'id_token.audience', /audience does not include client agent/));
  test('no audience', () => expectRefused(signed(claims({ aud: undefined })), 'id_token.audience', /audience does not include client agent/));
  test('several audiences, no azp', () => expectRefused(signed(claims({ aud: [CLIENT_ID, 'other'] })), 'id_token.audience', /several audiences and its azp is undefined/));
  test('several audiences, azp another client', () => expectRefused(signed(claims({ aud: [CLIENT_ID, 'other'], azp: 'other' })), 'id_token.audience', /its azp is "other", not client agent/));
  test('expired beyond the clock skew', () => expectRefused(signed(claims({ exp: NOW - CLOCK_SKEW - 1 })), 'id_token.expiry', /expired at 2023-11-14T22:13:04.000Z/));
  test('expired exactly the clock skew ago', () => expectRefused(signed(claims({ exp: NOW - CLOCK_SKEW })), 'id_token.expiry', /expired at/));
  test('no exp', () => expectRefused(signed(claims({ exp: undefined })), 'id_token.expiry', /no numeric exp claim/));
  test('issued in the future, beyond the skew', () => expectRefused(signed(claims({ iat: NOW + CLOCK_SKEW + 1 })), 'id_token.issued_at', /iat \(.*\) is in the future/));
  test('no iat', () => expectRefused(signed(claims({ iat: undefined })), 'id_token.issued_at', /no numeric iat claim/));
  test('no sub', () => expectRefused(signed(claims({ sub: undefined })), 'id_token.subject', /no sub claim/));
  test('an empty sub', () => expectRefused(signed(claims({ sub: '' })), 'id_token.subject', /no sub claim/));

  test('within the clock skew: just expired, or issued a little ahead of this clock', async () => {
    for (const over of [{ exp: NOW - CLOCK_SKEW + 1 }, { iat: NOW + CLOCK_SKEW }]) {
      const { checks, rejection } = await check(await signed(claims(over)));
      expect(rejection).toBeUndefined();
      expect(checks.results.every((c) => c.status === 'passed')).toBe(true);
    }
  });
});
