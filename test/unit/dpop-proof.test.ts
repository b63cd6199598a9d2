/** RFC 9449 §4.3 proof validation (src/dpop/proof.ts) and the IdP's DPoP nonces, without a server. */
import { createHash } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import {
  DPOP_ALGS, DpopProofError, replayKeepUntil, replayKey, singleProof, verifyDpopProof, type ProofRequirements,
} from '../../src/dpop/proof.ts';
import { dpopNonces } from '../../src/exchange/proof.ts';
import { dpopKey, makeProof, type DpopKey } from '../helpers/dpop.ts';

const HTU = 'https://idp.example/token';
const NOW = Math.floor(Date.now() / 1000);
const expected: ProofRequirements = { htm: 'POST', htu: HTU, now: NOW, maxAge: 60, skew: 15 };

let key: DpopKey;
let other: DpopKey;
beforeAll(async () => {
  key = await dpopKey();
  other = await dpopKey();
});

/** A valid proof's payload and signature under another header: what a signer would refuse to make. */
async function withHeader(header: object): Promise<string> {
  const [, payload, signature] = (await makeProof(key, { htu: HTU })).split('.');
  return `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${payload}.${signature}`;
}

async function refusal(proof: string, over: Partial<ProofRequirements> = {}): Promise<DpopProofError> {
  const err = await verifyDpopProof(proof, { ...expected, ...over }).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(DpopProofError);
  return err as DpopProofError;
}

describe('a valid proof', () => {
  test('names its key by the RFC 7638 thumbprint jose computes, with its jti and iat', async () => {
    const proof = await makeProof(key, { htu: HTU, jti: 'one', iat: NOW - 5 });
    expect(await verifyDpopProof(proof, expected)).toEqual({ jkt: await calculateJwkThumbprint(key.publicJwk, 'sha256'), jti: 'one', iat: NOW - 5 });
  });

  test.each(['ES384', 'PS256', 'RS256', 'EdDSA', 'Ed25519'])('signed with %s', async (alg) => {
    const k = await dpopKey(alg);
    expect((await verifyDpopProof(await makeProof(k, { htu: HTU }), expected)).jkt).toBe(k.jkt);
  });

  test('htu compared after normalisation, its query and fragment ignored (§4.3 item 9)', async () => {
    for (const htu of ['https://IDP.example:443/token', 'https://idp.example/token?x=1', 'https://idp.example/token#f']) {
      await expect(verifyDpopProof(await makeProof(key, { htu }), expected)).resolves.toMatchObject({ jkt: key.jkt });
    }
  });

  test('with an access token: ath is its hash', async () => {
    const proof = await makeProof(key, { htu: HTU, htm: 'GET', accessToken: 'the-token' });
    await expect(verifyDpopProof(proof, { ...expected, htm: 'GET', accessToken: 'the-token' })).resolves.toMatchObject({ jkt: key.jkt });
  });

  test('iat within the skew in the future, and up to maxAge in the past', async () => {
    await expect(verifyDpopProof(await makeProof(key, { htu: HTU, iat: NOW + 15 }), expected)).resolves.toBeDefined();
    await expect(verifyDpopProof(await makeProof(key, { htu: HTU, iat: NOW - 60 }), expected)).resolves.toBeDefined();
  });
});

describe('refused, each with what to fix', () => {
  const cases: [string, () => Promise<string>, RegExp, Partial<ProofRequirements>?][] = [
    ['not a JWT', async () => 'not-a-jwt', /not a JWT/],
    ['a JWE (five segments)', async () => 'a.b.c.d.e', /not a JWT/],
    ['a header that is not JSON', async () => `${Buffer.from('{oops').toString('base64url')}.e30.sig`, /not base64url-encoded JSON/],
    ['typ JWT', () => makeProof(key, { htu: HTU, header: { typ: 'JWT' } }), /typ is "JWT"; a DPoP proof has typ "dpop\+jwt"/],
    ['no typ', () => makeProof(key, { htu: HTU, header: { typ: undefined } }), /typ is missing/],
    ['a symmetric alg (HS256)', () => makeProof(key, { htu: HTU, header: { alg: 'HS256', jwk: { kty: 'oct', k: 'c2VjcmV0' } }, signWith: new TextEncoder().encode('a-shared-secret-of-32-bytes-long') }), /symmetric alg HS256/],
    ['alg none', async () => (await withHeader({ typ: 'dpop+jwt', alg: 'none', jwk: key.publicJwk })).replace(/[^.]+$/, ''), /unsigned \(alg "none"\)/],
    ['an alg off the allow-list (ES256K)', () => withHeader({ typ: 'dpop+jwt', alg: 'ES256K', jwk: key.publicJwk }), /alg "ES256K" is not accepted/],
    ['no jwk', () => makeProof(key, { htu: HTU, header: { jwk: undefined } }), /no jwk header/],
    ['a private key in the jwk', () => makeProof(key, { htu: HTU, header: { jwk: key.privateJwk } }), /jwk contains private key material \(d\)/],
    ['signed by another key than the jwk names', () => makeProof(key, { htu: HTU, signWith: other.privateKey }), /signature does not verify/],
    ['no jti', () => makeProof(key, { htu: HTU, claims: { jti: undefined } }), /no jti claim/],
    ['no htm', () => makeProof(key, { htu: HTU, claims: { htm: undefined } }), /no htm claim/],
    ['no iat', () => makeProof(key, { htu: HTU, claims: { iat: undefined } }), /no numeric iat claim/],
    ['another method', () => makeProof(key, { htu: HTU, htm: 'GET' }), /htm is GET; this request is a POST/],
    ['another URI', () => makeProof(key, { htu: 'https://idp.example/other' }), /htu is https:\/\/idp\.example\/other; this request is for https:\/\/idp\.example\/token/],
    ['another origin', () => makeProof(key, { htu: 'http://idp.example/token' }), /htu is http:/],
    ['an htu that is not a URL', () => makeProof(key, { htu: 'not a url' }), /htu is not a url/],
    ['a stale iat', () => makeProof(key, { htu: HTU, iat: NOW - 3600 }), /made 3600 s ago; proofs are accepted for 60 s/],
    ['an iat in the future', () => makeProof(key, { htu: HTU, iat: NOW + 120 }), /iat is 120 s in the future/],
    ['no ath with an access token', () => makeProof(key, { htu: HTU }), /no ath claim/, { accessToken: 'the-token' }],
    ['the ath of another token', () => makeProof(key, { htu: HTU, accessToken: 'another-token' }), /ath is not the hash of the access token/, { accessToken: 'the-token' }],
  ];

  // objects, not rows: a row shorter than the function's parameters would make jest pass a done callback
  test.each(cases.map(([name, make, says, over]) => ({ name, make, says, over })))('$name', async ({ make, says, over }) => {
    const err = await refusal(await make(), over);
    expect(err.error).toBe('invalid_dpop_proof');
    expect(err.message).toMatch(says);
  });

  test('the allow-list is asymmetric algorithms only', () => {
    expect((DPOP_ALGS as readonly string[]).filter((a) => a.startsWith('HS') || a === 'none')).toEqual([]);
  });
});

describe('nonces (§8)', () => {
  test('a proof without the nonce the server wants is use_dpop_nonce; with it, accepted', async () => {
    const nonces = dpopNonces('a shared secret of the deployment');
    const nonce = nonces.current(NOW);
    const needsNonce = { nonce: (n: string | undefined) => nonces.accepts(n, NOW) };
    const err = await refusal(await makeProof(key, { htu: HTU }), needsNonce);
    expect({ error: err.error, message: err.message }).toEqual({ error: 'use_dpop_nonce', message: expect.stringMatching(/requires a nonce/) });
    const wrong = await refusal(await makeProof(key, { htu: HTU, nonce: 'made-up' }), needsNonce);
    expect({ error: wrong.error, message: wrong.message }).toEqual({ error: 'use_dpop_nonce', message: expect.stringMatching(/nonce is not \(or no longer\) valid/) });
    await expect(verifyDpopProof(await makeProof(key, { htu: HTU, nonce }), { ...expected, ...needsNonce })).resolves.toMatchObject({ jkt: key.jkt });
  });

  test('a nonce is good on every node with the same secret, for up to five minutes, and never from the future', () => {
    const a = dpopNonces('shared');
    const b = dpopNonces('shared');
    const nonce = a.current(NOW);
    expect(b.accepts(nonce, NOW)).toBe(true);
    expect(b.accepts(nonce, NOW + 4 * 60)).toBe(true);
    expect(b.accepts(nonce, NOW + 6 * 60)).toBe(false);
    expect(b.accepts(nonce, NOW - 120)).toBe(false);
    expect(dpopNonces('another deployment').accepts(nonce, NOW)).toBe(false);
    const [step, mac] = nonce.split('.');
    expect(b.accepts(`${Number(step) + 1}.${mac}`, NOW + 60)).toBe(false);
    expect(b.accepts(undefined, NOW)).toBe(false);
  });
});

describe('replay bookkeeping', () => {
  test('one proof, one key: the same jti by another key is another proof; kept until it would be stale', async () => {
    const mine = await verifyDpopProof(await makeProof(key, { htu: HTU, jti: 'same' }), expected);
    const theirs = await verifyDpopProof(await makeProof(other, { htu: HTU, jti: 'same' }), expected);
    expect(replayKey(mine)).not.toBe(replayKey(theirs));
    expect(replayKey(mine)).toBe(createHash('sha256').update(`${key.jkt}.same`).digest('base64url'));
    expect(replayKeepUntil(mine, 60)).toBe(mine.iat + 61);
  });

  test('exactly one DPoP header, or none', () => {
    expect(singleProof(undefined)).toBeUndefined();
    expect(singleProof([])).toBeUndefined();
    expect(singleProof(['a'])).toBe('a');
    expect(() => singleProof(['a', 'b'])).toThrow(/2 DPoP headers; send exactly one proof/);
  });
});
