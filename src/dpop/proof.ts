import { createHash } from 'node:crypto';
import { calculateJwkThumbprint, compactVerify, decodeProtectedHeader, EmbeddedJWK, type JWK } from 'jose';

/**
 * DPoP proof validation (RFC 9449 §4.3), for every party here that accepts proofs: the IdP's token exchange,
 * the demo Resource AS's token endpoint and the demo MCP server. It checks one request's proof and says which
 * key it proves possession of; it stores nothing. Each caller remembers the proofs it accepted (`replayKey`) in
 * its own store, so a proof is used once (§11.1), and decides what a missing proof means for its own request.
 */

export const DPOP_TYP = 'dpop+jwt';

/** Asymmetric only (§4.3 item 5, §11.6): `none` proves nothing and an HMAC key cannot be shown publicly. */
export const DPOP_ALGS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA', 'Ed25519'] as const;
export type DpopAlg = (typeof DPOP_ALGS)[number];

/** JWK members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

/** What one request's proof must say, as the server that receives it sees the request. */
export interface ProofRequirements {
  /** the request's method */
  htm: string;
  /** the URI the request was sent to, as this server names it publicly (its query and fragment are ignored) */
  htu: string;
  /** epoch seconds */
  now: number;
  /** the oldest `iat` accepted: proofs are made for one request, right before it (§11.1) */
  maxAge: number;
  /** how far in the future `iat` may be (clock skew) */
  skew: number;
  /** the access token the proof accompanies: its `ath` must be that token's hash (§4.3 item 12, §7.1) */
  accessToken?: string | undefined;
  /** server-provided nonces (§8, §9): whether the proof's `nonce` is acceptable; absent, nonces are not used */
  nonce?: ((value: string | undefined) => boolean) | undefined;
}

export interface VerifiedProof {
  /** the RFC 7638 SHA-256 thumbprint of the proof's key: what a bound token's `cnf.jkt` names */
  jkt: string;
  jti: string;
  iat: number;
}

export type DpopErrorCode = 'invalid_dpop_proof' | 'use_dpop_nonce';

/** A proof that is refused, and why, in words a client author can act on. */
export class DpopProofError extends Error {
  /** `use_dpop_nonce` when only a (fresh) server nonce is missing (§8, §9); otherwise `invalid_dpop_proof` */
  readonly error: DpopErrorCode;

  constructor(message: string, error: DpopErrorCode = 'invalid_dpop_proof') {
    super(message);
    this.name = 'DpopProofError';
    this.error = error;
  }
}

const refuse = (message: string, error?: DpopErrorCode): never => {
  throw new DpopProofError(message, error);
};

/**
 * The request's one DPoP header (§4.3 item 1): undefined when there is none, refused when there are several.
 * Takes the header's values as received, one per field line (Node's `headersDistinct`).
 */
export function singleProof(values: readonly string[] | undefined): string | undefined {
  if (!values || values.length === 0) return undefined;
  if (values.length > 1) refuse(`the request carries ${values.length} DPoP headers; send exactly one proof`);
  return values[0]!;
}

/** `ath`: the base64url SHA-256 hash of the access token's ASCII value (§4.1). */
export const accessTokenHash = (accessToken: string): string => createHash('sha256').update(accessToken, 'ascii').digest('base64url');

/**
 * Where a proof is remembered against replay: its key and `jti` together (another key's proof with the same
 * `jti` is another proof), hashed so a long `jti` costs the store nothing.
 */
export const replayKey = (proof: VerifiedProof): string => createHash('sha256').update(`${proof.jkt}.${proof.jti}`).digest('base64url');

/** Until when a proof must be remembered: after that its `iat` is refused anyway. */
export const replayKeepUntil = (proof: VerifiedProof, maxAge: number): number => proof.iat + maxAge + 1;

const SEGMENT = /^[A-Za-z0-9_-]+$/;

function header(proof: string): ReturnType<typeof decodeProtectedHeader> {
  const parts = proof.split('.');
  // an unsecured JWS has an empty third segment: let it through to the alg check, which says why
  if (parts.length !== 3 || !parts.every((p, i) => SEGMENT.test(p) || (i === 2 && p === ''))) {
    refuse('the DPoP header is not a JWT (three base64url segments separated by dots)');
  }
  try {
    return decodeProtectedHeader(proof);
  } catch {
    return refuse('the DPoP proof\'s JOSE header is not base64url-encoded JSON');
  }
}

function checkTyp(typ: unknown) {
  if (typeof typ !== 'string' || typ.toLowerCase() !== DPOP_TYP) {
    refuse(`the DPoP proof's typ is ${typ === undefined ? 'missing' : JSON.stringify(typ)}; a DPoP proof has typ "${DPOP_TYP}"`);
  }
}

function checkAlg(alg: unknown) {
  if (alg === 'none') refuse('the DPoP proof is unsigned (alg "none"); sign it with the private key it names');
  if (typeof alg === 'string' && /^HS\d+$/i.test(alg)) {
    refuse(`the DPoP proof uses the symmetric alg ${alg}, which cannot prove possession of a public key; use one of ${DPOP_ALGS.join(', ')}`);
  }
  if (typeof alg !== 'string' || !(DPOP_ALGS as readonly string[]).includes(alg)) {
    refuse(`the DPoP proof's alg ${JSON.stringify(alg)} is not accepted; use one of ${DPOP_ALGS.join(', ')}`);
  }
}

/** §4.3 item 7: the proof carries the public key only, and never anything secret. */
function checkJwk(jwk: unknown): JWK {
  if (!jwk || typeof jwk !== 'object' || Array.isArray(jwk) || typeof (jwk as JWK).kty !== 'string') {
    refuse('the DPoP proof has no jwk header: it must carry the public key that signed it');
  }
  const secret = PRIVATE_MEMBERS.filter((m) => (jwk as Record<string, unknown>)[m] !== undefined);
  if (secret.length) {
    refuse(`the DPoP proof's jwk contains private key material (${secret.join(', ')}); send the public key only, and treat this key as compromised`);
  }
  return jwk as JWK;
}

async function verifiedClaims(proof: string): Promise<Record<string, unknown>> {
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(proof, EmbeddedJWK, { algorithms: [...DPOP_ALGS] }));
  } catch {
    return refuse('the DPoP proof\'s signature does not verify with the key in its jwk header');
  }
  let claims: unknown;
  try {
    claims = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    claims = undefined;
  }
  if (!claims || typeof claims !== 'object' || Array.isArray(claims)) refuse('the DPoP proof\'s payload is not a JSON object of claims');
  return claims as Record<string, unknown>;
}

interface ProofClaims { jti: string; htm: string; htu: string; iat: number; nonce?: unknown; ath?: unknown }

function requiredClaims(claims: Record<string, unknown>): ProofClaims {
  const { jti, htm, htu, iat } = claims;
  if (typeof jti !== 'string' || jti === '') refuse('the DPoP proof has no jti claim: every proof needs a unique one');
  if (typeof htm !== 'string' || htm === '') refuse('the DPoP proof has no htm claim (the request\'s HTTP method)');
  if (typeof htu !== 'string' || htu === '') refuse('the DPoP proof has no htu claim (the URI the request is sent to)');
  if (typeof iat !== 'number' || !Number.isFinite(iat)) refuse('the DPoP proof has no numeric iat claim');
  return claims as unknown as ProofClaims;
}

/** §4.3 item 9: compared after the normalisation RFC 3986 §6.2.2 and §6.2.3 describe, query and fragment ignored. */
function sameTarget(htu: string, expected: string): boolean {
  const actual = URL.parse(htu);
  if (!actual) return false;
  actual.search = '';
  actual.hash = '';
  const target = new URL(expected);
  target.search = '';
  target.hash = '';
  return actual.href === target.href;
}

/**
 * Every check of §4.3 but replay, in its order: one well-formed JWT, `typ`, an allow-listed asymmetric `alg`, a
 * public `jwk` that verifies the signature, `htm`, `htu`, the server's nonce when it uses them, `iat` within the
 * window, and `ath` when the proof accompanies an access token. Throws DpopProofError.
 */
export async function verifyDpopProof(proof: string, expected: ProofRequirements): Promise<VerifiedProof> {
  const h = header(proof);
  checkTyp(h.typ);
  checkAlg(h.alg);
  const jwk = checkJwk(h.jwk);
  const claims = requiredClaims(await verifiedClaims(proof));

  if (claims.htm !== expected.htm) refuse(`the DPoP proof's htm is ${claims.htm}; this request is a ${expected.htm}`);
  if (!sameTarget(claims.htu, expected.htu)) refuse(`the DPoP proof's htu is ${claims.htu}; this request is for ${expected.htu}`);
  if (expected.nonce && !expected.nonce(typeof claims.nonce === 'string' ? claims.nonce : undefined)) {
    refuse(claims.nonce === undefined
      ? 'this server requires a nonce in DPoP proofs: sign a new proof with the nonce from the DPoP-Nonce response header'
      : 'the DPoP proof\'s nonce is not (or no longer) valid: sign a new proof with the nonce from the DPoP-Nonce response header', 'use_dpop_nonce');
  }
  if (claims.iat > expected.now + expected.skew) refuse(`the DPoP proof's iat is ${claims.iat - expected.now} s in the future; check the client's clock`);
  if (claims.iat < expected.now - expected.maxAge) {
    refuse(`the DPoP proof was made ${expected.now - claims.iat} s ago; proofs are accepted for ${expected.maxAge} s: sign a new one for each request`);
  }
  if (expected.accessToken !== undefined) {
    if (claims.ath === undefined) refuse('the DPoP proof has no ath claim: a proof sent with an access token carries the token\'s hash');
    if (claims.ath !== accessTokenHash(expected.accessToken)) refuse('the DPoP proof\'s ath is not the hash of the access token it accompanies');
  }
  return { jkt: await calculateJwkThumbprint(jwk, 'sha256'), jti: claims.jti, iat: claims.iat };
}
