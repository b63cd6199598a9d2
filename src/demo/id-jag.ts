import { compactVerify, decodeJwt, decodeProtectedHeader, errors, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { invalidGrant } from './errors.ts';

export const ID_JAG_TYP = 'oauth-id-jag+jwt';

/** Asymmetric only: an HMAC alg would let anyone holding the IdP's public key mint ID-JAGs; `none` is never a signature. */
export const ID_JAG_ALGS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA', 'Ed25519'];

export interface IdJagTrust {
  /** this AS's issuer: the only acceptable `aud` */
  audience: string;
  /** the trusted IdP's issuer: the only acceptable `iss` */
  idpIssuer: string;
  /** the trusted IdP's keys (jose createRemoteJWKSet: cached, refetched on an unknown kid) */
  idpKeys: JWTVerifyGetKey;
  /** seconds of clock skew tolerated on `exp` and `iat` */
  skew: number;
}

export interface VerifiedIdJag {
  sub: string;
  clientId: string;
  jti: string;
  exp: number;
  /** undefined when the ID-JAG names no resource (the grant covers the whole Resource AS) */
  resources: string[] | undefined;
  scopes: string[];
  email: string | undefined;
  /** the DPoP key the IdP bound it to (`cnf.jkt`, draft §9.8.1), if it did */
  jkt: string | undefined;
  claims: JWTPayload;
}

/**
 * Draft §4.4 / RFC 7523 §3: everything the Resource AS must check about the ID-JAG itself, in an order
 * that names the first real problem (the header before the keys, the keys before any claim is trusted).
 * Replay is not checked here: a `jti` is only spent when a token is actually issued.
 */
export async function verifyIdJag(assertion: string, clientId: string, trust: IdJagTrust, now: number): Promise<VerifiedIdJag> {
  const header = readHeader(assertion);
  checkTyp(header.typ);
  checkAlg(header.alg);
  checkIssuer(readUnverifiedIssuer(assertion), trust.idpIssuer);
  const claims = await verifySignature(assertion, trust.idpKeys, header.kid);
  checkAudience(claims.aud, trust.audience);
  const verified = requiredClaims(claims);
  if (verified.clientId !== clientId) {
    throw invalidGrant(`the ID-JAG was issued to client_id ${verified.clientId}, but the request authenticated as ${clientId}`);
  }
  checkTimes(verified.exp, claims.iat as number, now, trust.skew);
  return verified;
}

function readHeader(assertion: string) {
  try {
    if (assertion.split('.').length !== 3) throw new Error('not three parts');
    return decodeProtectedHeader(assertion);
  } catch {
    throw invalidGrant('assertion is not a compact JWS (a signed JWT with three base64url parts)');
  }
}

/** RFC 8725 §3.11 explicit typing: compared as media types are (case-insensitive, optional `application/`). */
function checkTyp(typ: unknown) {
  const normalized = typeof typ === 'string' ? typ.toLowerCase().replace(/^application\//, '') : undefined;
  if (normalized !== ID_JAG_TYP) {
    throw invalidGrant(`the assertion's header typ is ${typ === undefined ? 'missing' : JSON.stringify(typ)}; an ID-JAG has typ "${ID_JAG_TYP}"`);
  }
}

function checkAlg(alg: unknown) {
  if (typeof alg !== 'string' || !ID_JAG_ALGS.includes(alg)) {
    throw invalidGrant(`the ID-JAG's alg ${JSON.stringify(alg)} is not accepted; use an asymmetric algorithm (${ID_JAG_ALGS.join(', ')})`);
  }
}

function readUnverifiedIssuer(assertion: string): unknown {
  try {
    return decodeJwt(assertion).iss;
  } catch {
    throw invalidGrant('the ID-JAG payload is not a JSON object of JWT claims');
  }
}

/** Checked before the signature so an untrusted issuer never makes this AS fetch anything. */
function checkIssuer(iss: unknown, trusted: string) {
  if (iss !== trusted) throw invalidGrant(`the ID-JAG's iss ${JSON.stringify(iss)} is not a trusted IdP (this AS trusts ${trusted})`);
}

async function verifySignature(assertion: string, keys: JWTVerifyGetKey, kid: string | undefined): Promise<JWTPayload> {
  try {
    await compactVerify(assertion, keys, { algorithms: ID_JAG_ALGS });
  } catch (err) {
    throw invalidGrant(signatureFailure(err, kid));
  }
  // the very bytes just verified, already known to decode (readUnverifiedIssuer)
  return decodeJwt(assertion);
}

function signatureFailure(err: unknown, kid: string | undefined): string {
  // by code and name, not instanceof: errors may come from another realm (fetch's TypeError under a VM)
  const { code, name, message } = (err ?? {}) as { code?: string; name?: string; message?: string };
  if (code === errors.JWKSNoMatchingKey.code) return `no key in the IdP's JWKS matches the ID-JAG's kid ${JSON.stringify(kid)} and alg`;
  if (code === errors.JWKSMultipleMatchingKeys.code) return 'the ID-JAG has no kid and the IdP publishes several keys for its alg';
  if (code === errors.JWSSignatureVerificationFailed.code) return "the ID-JAG's signature does not verify with the IdP's key";
  if (code === errors.JWKSTimeout.code || code === errors.JWKSInvalid.code || name === 'TypeError') {
    return "the IdP's JWKS could not be fetched to verify the ID-JAG; try again later";
  }
  return `the ID-JAG could not be verified: ${message ?? String(err)}`;
}

/** Draft §4.4: `aud` is this AS's issuer, as a string or an array holding exactly that one value. */
function checkAudience(aud: unknown, expected: string) {
  const single = Array.isArray(aud) && aud.length === 1 ? aud[0] : aud;
  if (single !== expected) {
    throw invalidGrant(`the ID-JAG's aud ${JSON.stringify(aud)} is not this authorization server (${expected}); ask the IdP for an ID-JAG with audience ${expected}`);
  }
}

function requiredClaims(claims: JWTPayload): VerifiedIdJag {
  const missing = (name: string, kind: string) => invalidGrant(`the ID-JAG's ${name} claim is missing or not a ${kind}`);
  const str = (name: string) => {
    const v = claims[name];
    if (typeof v !== 'string' || !v) throw missing(name, 'non-empty string');
    return v;
  };
  const num = (name: string) => {
    const v = claims[name];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw missing(name, 'number (NumericDate)');
    return v;
  };
  num('iat');
  return {
    sub: str('sub'),
    clientId: str('client_id'),
    jti: str('jti'),
    exp: num('exp'),
    resources: resourceClaim(claims.resource),
    scopes: scopeClaim(claims.scope),
    email: typeof claims.email === 'string' ? claims.email : undefined,
    jkt: cnfClaim(claims.cnf),
    claims,
  };
}

/** RFC 7800 `cnf`: this AS knows RFC 9449's `jkt` only, and refuses a binding it cannot check rather than ignore it. */
function cnfClaim(cnf: unknown): string | undefined {
  if (cnf === undefined) return undefined;
  const jkt = cnf && typeof cnf === 'object' && !Array.isArray(cnf) ? (cnf as Record<string, unknown>).jkt : undefined;
  if (typeof jkt !== 'string' || jkt === '') throw invalidGrant("the ID-JAG's cnf claim names no DPoP key (jkt), the only confirmation method this AS can check");
  return jkt;
}

function resourceClaim(resource: unknown): string[] | undefined {
  if (resource === undefined) return undefined;
  if (typeof resource === 'string') return [resource];
  if (Array.isArray(resource) && resource.length && resource.every((r) => typeof r === 'string')) return resource as string[];
  throw invalidGrant("the ID-JAG's resource claim is neither a string nor an array of strings");
}

function scopeClaim(scope: unknown): string[] {
  if (scope === undefined) return [];
  if (typeof scope !== 'string') throw invalidGrant("the ID-JAG's scope claim is not a space-separated string");
  return splitScope(scope);
}

export const splitScope = (scope: string): string[] => [...new Set(scope.split(' ').filter(Boolean))];

function checkTimes(exp: number, iat: number, now: number, skew: number) {
  if (exp + skew <= now) throw invalidGrant(`the ID-JAG expired ${now - exp} s ago; get a fresh one from the IdP`);
  if (iat - skew > now) throw invalidGrant(`the ID-JAG's iat is ${iat - now} s in the future; check the IdP's clock`);
}
