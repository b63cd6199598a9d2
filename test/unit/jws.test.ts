/**
 * The token endpoint's own JWS sign and verify (src/exchange/jws.ts), held to jose: jose verifies what it signs,
 * it verifies what jose signs, and it refuses whatever jose refuses among tampered signatures.
 */
import { compactVerify, decodeProtectedHeader, SignJWT } from 'jose';
import { payloadOf, privateKeyOf, publicKeyOf, signCompact, verifiesCompact } from '../../src/exchange/jws.ts';
import { signingKey } from './fixtures.ts';

type Key = Awaited<ReturnType<typeof signingKey>>;
let es: Key;
let rs: Key;
let otherRs: Key;

beforeAll(async () => {
  [es, rs, otherRs] = await Promise.all([signingKey('id_jag'), signingKey('id_token'), signingKey('id_token')]);
});

const payload = { iss: 'https://idp.example', sub: 'sub-alice', aud: 'https://as.example', name: 'Ålice ✓', n: 1 };
const text = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes)) as unknown;

describe('signCompact', () => {
  test('an ES256 JWS that jose verifies, with the header and payload given', async () => {
    const jwt = signCompact({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: es.kid }, payload, privateKeyOf(es.privateJwk));
    const verified = await compactVerify(jwt, es.publicKey, { algorithms: ['ES256'] });
    expect(verified.protectedHeader).toEqual({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: es.kid });
    expect(text(verified.payload)).toEqual(payload);
    // RFC 7518 §3.4: r || s, 32 octets each, not DER
    expect(Buffer.from(jwt.split('.')[2]!, 'base64url')).toHaveLength(64);
  });

  test('an RS256 JWS that jose verifies', async () => {
    const jwt = signCompact({ alg: 'RS256', kid: rs.kid }, payload, privateKeyOf(rs.privateJwk));
    expect(text((await compactVerify(jwt, rs.publicKey, { algorithms: ['RS256'] })).payload)).toEqual(payload);
  });

  test('refuses a key of the wrong type for the algorithm', () => {
    expect(() => signCompact({ alg: 'ES256' }, payload, privateKeyOf(rs.privateJwk))).toThrow(/rsa key cannot sign ES256/);
    expect(() => signCompact({ alg: 'RS256' }, payload, privateKeyOf(es.privateJwk))).toThrow(/ec key cannot sign RS256/);
  });
});

describe('verifiesCompact', () => {
  const byJose = (key: Key, alg: 'RS256' | 'ES256', body: Record<string, unknown> = payload) =>
    new SignJWT(body).setProtectedHeader({ alg, kid: key.kid }).sign(key.privateKey);

  test('verifies what jose signs, RS256 and ES256, and gives its payload', async () => {
    const idToken = await byJose(rs, 'RS256');
    expect(verifiesCompact(idToken, publicKeyOf(rs.publicJwk), 'RS256')).toBe(true);
    expect(text(payloadOf(idToken))).toEqual(payload);
    expect(verifiesCompact(await byJose(es, 'ES256'), publicKeyOf(es.publicJwk), 'ES256')).toBe(true);
  });

  test('refuses what jose refuses: another key, a changed payload, header or signature', async () => {
    const token = await byJose(rs, 'RS256');
    const [header, body, signature] = token.split('.') as [string, string, string];
    const changedBody = Buffer.from(JSON.stringify({ ...payload, sub: 'sub-mallory' })).toString('base64url');
    const changedHeader = Buffer.from(JSON.stringify({ ...decodeProtectedHeader(token), kid: 'other' })).toString('base64url');
    const sig = Buffer.from(signature, 'base64url');
    const flipped = Buffer.from(sig);
    flipped[10] = flipped[10]! ^ 1;
    const cases = {
      'another key': [await byJose(otherRs, 'RS256'), rs],
      'a changed payload': [`${header}.${changedBody}.${signature}`, rs],
      'a changed header': [`${changedHeader}.${body}.${signature}`, rs],
      'one bit of the signature': [`${header}.${body}.${flipped.toString('base64url')}`, rs],
      'a truncated signature': [`${header}.${body}.${sig.subarray(0, 200).toString('base64url')}`, rs],
      'no signature': [`${header}.${body}.`, rs],
    } as const;
    for (const [name, [jwt, key]] of Object.entries(cases)) {
      await expect(compactVerify(jwt, key.publicKey, { algorithms: ['RS256'] })).rejects.toThrow();
      expect({ name, verifies: verifiesCompact(jwt, publicKeyOf(key.publicJwk), 'RS256') }).toEqual({ name, verifies: false });
    }
  });

  test('an ES256 signature in DER, or of the wrong length, does not verify', async () => {
    const token = await byJose(es, 'ES256');
    const [header, body, signature] = token.split('.') as [string, string, string];
    expect(verifiesCompact(`${header}.${body}.${signature.slice(0, -4)}`, publicKeyOf(es.publicJwk), 'ES256')).toBe(false);
    expect(verifiesCompact(`${header}.${body}.${signature}AAAA`, publicKeyOf(es.publicJwk), 'ES256')).toBe(false);
  });

  test('a key of the wrong type for the algorithm does not verify', async () => {
    expect(verifiesCompact(await byJose(rs, 'RS256'), publicKeyOf(es.publicJwk), 'RS256')).toBe(false);
  });
});

test('a key is imported once per kid', () => {
  expect(privateKeyOf(es.privateJwk)).toBe(privateKeyOf({ ...es.privateJwk }));
  expect(publicKeyOf(rs.publicJwk)).toBe(publicKeyOf({ ...rs.publicJwk }));
});
