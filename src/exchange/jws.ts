import { createPrivateKey, createPublicKey, sign, verify, type JsonWebKey, type JsonWebKeyInput, type KeyObject } from 'node:crypto';

/**
 * The two JWS operations on the token endpoint's path, in the compact serialization (RFC 7515 §7.1): signing an
 * ID-JAG and verifying an ID Token's signature, with node:crypto's synchronous sign and verify.
 *
 * Why not jose here: jose signs and verifies through WebCrypto, and every WebCrypto operation is a job on
 * libuv's thread pool. On a server whose cores all serve requests (one worker process per core), the hand-off
 * costs more than the signature: measured per exchange under load, 130–380 µs of CPU in the pool's threads plus
 * the jobs' bookkeeping on the main thread, against ~75 µs for the same ES256 signature and RS256 verification
 * done in place. Everything else (key generation, JWKS, DPoP proofs, the demo Resource AS) stays with jose, and
 * test/unit/jws.test.ts holds these two to it: jose verifies what this signs, and this verifies what jose signs.
 *
 * Only the algorithms this IdP's keys use (src/oidc/keys.ts KEY_ALGS).
 */
export type JwsAlg = 'RS256' | 'ES256';

/** Per algorithm: the key type it needs and how node:crypto encodes its signature (RFC 7518 §3.3, §3.4). */
const ALGS: Record<JwsAlg, { keyType: string; curve?: string; options: { dsaEncoding?: 'ieee-p1363' } }> = {
  RS256: { keyType: 'rsa', options: {} },
  // JWS carries the raw r || s (RFC 7518 §3.4), not the DER that node:crypto would produce by default
  ES256: { keyType: 'ec', curve: 'prime256v1', options: { dsaEncoding: 'ieee-p1363' } },
};

const isAlg = (alg: string): alg is JwsAlg => Object.hasOwn(ALGS, alg);

function checkedKey(key: KeyObject, alg: string): KeyObject {
  if (!isAlg(alg)) throw new Error(`unsupported JWS algorithm ${alg}`);
  const { keyType, curve } = ALGS[alg];
  if (key.asymmetricKeyType !== keyType || (curve !== undefined && key.asymmetricKeyDetails?.namedCurve !== curve)) {
    throw new Error(`a ${key.asymmetricKeyType ?? 'symmetric'} key cannot sign ${alg}`);
  }
  return key;
}

// Keys are named by their RFC 7638 thumbprint (src/oidc/keys.ts): one kid, one key, for as long as it lives.
const privateKeys = new Map<string, KeyObject>();
const publicKeys = new Map<string, KeyObject>();

function keyObject(cache: Map<string, KeyObject>, jwk: JsonWebKey & { kid?: string; alg?: string }, make: (input: JsonWebKeyInput) => KeyObject): KeyObject {
  const kid = jwk.kid;
  const cached = kid === undefined ? undefined : cache.get(kid);
  if (cached) return cached;
  const key = checkedKey(make({ key: jwk, format: 'jwk' }), String(jwk.alg));
  if (kid !== undefined) cache.set(kid, key);
  return key;
}

/** A signing key from its private JWK (with `kid` and `alg`), imported once. */
export const privateKeyOf = (jwk: JsonWebKey & { kid?: string; alg?: string }): KeyObject => keyObject(privateKeys, jwk, createPrivateKey);

/** A verification key from its public JWK (with `kid` and `alg`), imported once. */
export const publicKeyOf = (jwk: JsonWebKey & { kid?: string; alg?: string }): KeyObject => keyObject(publicKeys, jwk, createPublicKey);

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** RFC 7515 §5.1: BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature over the first two). */
export function signCompact(header: { alg: JwsAlg } & Record<string, unknown>, payload: object, key: KeyObject): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const signature = sign('sha256', Buffer.from(input), { key: checkedKey(key, header.alg), ...ALGS[header.alg].options });
  return `${input}.${signature.toString('base64url')}`;
}

/**
 * RFC 7515 §5.2 step 8: whether the signature of a compact JWS verifies with `key` under `alg`. The caller has
 * already checked the serialization (three base64url segments) and the header (its `alg` is `alg`, no `crit`).
 */
export function verifiesCompact(token: string, key: KeyObject, alg: JwsAlg): boolean {
  const dot = token.lastIndexOf('.');
  if (dot <= 0) return false;
  try {
    return verify('sha256', Buffer.from(token.slice(0, dot)), { key: checkedKey(key, alg), ...ALGS[alg].options }, Buffer.from(token.slice(dot + 1), 'base64url'));
  } catch {
    // a signature of the wrong length for the key (or no signature at all) is one that does not verify
    return false;
  }
}

/** The payload of a compact JWS whose signature verified: its second segment, decoded. */
export function payloadOf(token: string): Uint8Array {
  return Buffer.from(token.slice(token.indexOf('.') + 1, token.lastIndexOf('.')), 'base64url');
}
