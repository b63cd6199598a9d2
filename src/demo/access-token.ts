import { OAuthError, OAuthErrorCode, type AuthInfo } from '@modelcontextprotocol/server';
import { decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';

/** Asymmetric only: an HMAC alg would let anyone holding the AS's public key mint access tokens. */
const ACCESS_TOKEN_ALGS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA', 'Ed25519'];

export interface AccessTokenTrust {
  /** the demo Resource AS's issuer: the only acceptable `iss` */
  asIssuer: string;
  /** its keys (jose createRemoteJWKSet: cached, refetched on an unknown kid) */
  asKeys: JWTVerifyGetKey;
  /** this MCP server's resource identifier: the `aud` the token must carry */
  resource: string;
  /** seconds of clock skew tolerated on `exp`/`iat` */
  skew: number;
}

/** Who is calling, as the access token says (the ID-JAG's subject and email, carried through by the AS). */
export interface Caller {
  sub: string;
  email: string | undefined;
  /** the client's id at the demo Resource AS */
  clientId: string;
  /** a DPoP-bound token's key (`cnf.jkt`, RFC 9449 §6): only a proof by that key may present it */
  jkt: string | undefined;
}

const invalidToken = (description: string) => new OAuthError(OAuthErrorCode.InvalidToken, description);

/**
 * RFC 9068 §4 checks of a JWT access token, each failure an `invalid_token` whose description says what to
 * fix (the MCP server's gate turns it into the 401 challenge); keys that cannot be fetched are
 * `temporarily_unavailable` instead. The result is the MCP SDK's AuthInfo, with the caller in `extra.caller`
 * for the tools.
 */
export async function verifyAccessToken(token: string, trust: AccessTokenTrust): Promise<AuthInfo> {
  checkShape(token, trust);
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, trust.asKeys, {
      typ: 'at+jwt',
      issuer: trust.asIssuer,
      audience: trust.resource,
      algorithms: ACCESS_TOKEN_ALGS,
      clockTolerance: trust.skew,
      requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'client_id'],
    }));
  } catch (err) {
    if (keysUnavailable(err)) {
      // not the token's fault: say so, and let the client retry the same token
      throw new OAuthError(OAuthErrorCode.TemporarilyUnavailable, 'the authorization server\'s keys could not be fetched to verify the access token; try again later');
    }
    throw invalidToken(verificationFailure(err, trust));
  }
  const { sub, exp, aud, iat } = payload as Required<Pick<JWTPayload, 'sub' | 'exp' | 'aud' | 'iat'>>;
  // jose checks iat only against a maximum age; a token from the future means a clock is wrong
  if (iat - trust.skew > Math.floor(Date.now() / 1000)) throw invalidToken('the access token\'s iat is in the future; check the authorization server\'s clock');
  const caller: Caller = {
    sub,
    email: typeof payload.email === 'string' ? payload.email : undefined,
    clientId: String(payload.client_id),
    jkt: boundKey(payload.cnf),
  };
  return {
    token,
    clientId: caller.clientId,
    scopes: typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [],
    expiresAt: exp,
    resource: new URL([aud].flat().find((a) => a === trust.resource) ?? trust.resource),
    extra: { caller },
  };
}

/**
 * Before any key is fetched: not a JWT, or a JWT that is plainly not this server's access token (the ID-JAG
 * or ID Token presented by mistake is the common case). Names what was sent instead.
 */
function checkShape(token: string, trust: AccessTokenTrust) {
  let header: ReturnType<typeof decodeProtectedHeader>;
  let claims: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    claims = decodeJwt(token);
  } catch {
    throw invalidToken('the access token is not a JWT; get one from the demo authorization server (see resource_metadata)');
  }
  if (header.typ === 'oauth-id-jag+jwt') {
    throw invalidToken(`this is an ID-JAG, not an access token: present it to ${trust.asIssuer}/token with the jwt-bearer grant and send the access token it returns`);
  }
  if (claims.iss !== trust.asIssuer) {
    throw invalidToken(`the access token was issued by ${typeof claims.iss === 'string' ? claims.iss : 'no iss'}; this MCP server accepts only tokens from ${trust.asIssuer}`);
  }
}

/** RFC 7800 `cnf` with RFC 9449 §6.1's `jkt`: this server knows no other confirmation method, so refuses one. */
function boundKey(cnf: unknown): string | undefined {
  if (cnf === undefined) return undefined;
  const jkt = cnf && typeof cnf === 'object' ? (cnf as Record<string, unknown>).jkt : undefined;
  if (typeof jkt !== 'string' || jkt === '') throw invalidToken('the access token\'s cnf claim names no DPoP key (jkt); this MCP server accepts DPoP-bound tokens only');
  return jkt;
}

function keysUnavailable(err: unknown): boolean {
  // by code and name, not instanceof: errors may come from another realm (fetch's TypeError under a VM)
  const { code, name } = (err ?? {}) as { code?: string; name?: string };
  return code === errors.JWKSTimeout.code || code === errors.JWKSInvalid.code || name === 'TypeError';
}

function verificationFailure(err: unknown, trust: AccessTokenTrust): string {
  const { code, claim, message } = (err ?? {}) as { code?: string; claim?: string; message?: string };
  if (code === errors.JWTExpired.code) return 'the access token has expired; get a new one from the authorization server';
  if (code === errors.JWTClaimValidationFailed.code) {
    if (claim === 'aud') return `the access token is for another resource; this MCP server is ${trust.resource} (request the token with resource=${trust.resource})`;
    if (claim === 'typ') return 'the access token\'s header typ is not at+jwt (RFC 9068 section 2.1)';
    if (claim === 'iat') return 'the access token\'s iat is in the future; check the authorization server\'s clock';
    if (message?.startsWith('missing required')) return `the access token has no ${claim} claim (RFC 9068 section 2.2)`;
    return `the access token's ${claim ?? 'claims'} claim is not acceptable`;
  }
  if (code === errors.JOSEAlgNotAllowed.code) return 'the access token\'s alg is not accepted (asymmetric algorithms only)';
  if (code === errors.JWKSNoMatchingKey.code) return 'no key of the authorization server matches the access token\'s kid';
  if (code === errors.JWSSignatureVerificationFailed.code) return 'the access token\'s signature does not verify with the authorization server\'s key';
  return `the access token could not be verified: ${message ?? String(err)}`;
}
