import { decodeProtectedHeader } from 'jose';
import type Provider from 'oidc-provider';
import type { User } from '../db/users.ts';
import { KEY_ALGS, type KeySet } from '../oidc/keys.ts';
import { payloadOf, publicKeyOf, verifiesCompact } from './jws.ts';
import { ID_TOKEN_CHECKS, REFRESH_TOKEN_CHECKS, type CheckDef, type CheckList } from './checks.ts';
import { ID_TOKEN, type ExchangeRequest, type SubjectTokenType } from './request.ts';

/** Clock skew allowed on `exp` and `iat`, in seconds: the provider's own default tolerance. */
export const CLOCK_SKEW = 15;

/** How and when the user signed in, as the subject token says. */
export interface SignIn {
  authTime?: number;
  amr?: string[];
  acr?: string;
}

/** Who the subject token names, and how they signed in. */
export interface Identified {
  sub: string;
  auth: SignIn;
}

/** The user the exchange acts for, as the directory has them now, and how they signed in. */
export interface Subject extends SignIn {
  user: User;
  groups: string[];
}

/**
 * Where the exchange learns who the user is. At the token endpoint: the subject token, checked. In the
 * simulator: an assumed valid token of a chosen user (it runs none of the token's checks).
 */
export interface SubjectSource {
  /** the checks identify() runs for this kind of subject token, planned after the request's */
  checks(type: SubjectTokenType): CheckDef[];
  identify(req: ExchangeRequest, checks: CheckList, now: number): Promise<Identified>;
}

export interface TokenSubjectDeps {
  issuer: string;
  keys: KeySet;
  provider: Provider;
}

/** The subject token (draft §4.3.3, RFC 8693 §2.1): an ID Token or a refresh token this IdP issued to this client. */
export function tokenSubjects(deps: TokenSubjectDeps): SubjectSource {
  return {
    checks: (type) => (type === ID_TOKEN ? ID_TOKEN_CHECKS : REFRESH_TOKEN_CHECKS),
    identify: (req, checks, now) => (req.subjectTokenType === ID_TOKEN
      ? validateIdToken(req, checks, deps, now)
      : validateRefreshToken(req, checks, deps.provider)),
  };
}

/** The simulator's subject: a valid token of this user is assumed, from a login at `authTime`. */
export function assumedSubject(sub: string, authTime: number): SubjectSource {
  return {
    checks: () => [],
    identify: async () => ({ sub, auth: { authTime } }),
  };
}


/** Everything issued under the refresh token's grant, and the grant itself. */
async function revokeGrant(provider: Provider, rt: InstanceType<Provider['RefreshToken']>): Promise<void> {
  const { grantId } = rt;
  await rt.destroy();
  if (!grantId) return;
  await Promise.all([
    provider.AccessToken.revokeByGrantId(grantId),
    provider.RefreshToken.revokeByGrantId(grantId),
    provider.AuthorizationCode.revokeByGrantId(grantId),
    provider.Grant.adapter.destroy(grantId),
  ]);
}

const segment = (s: string) => /^[A-Za-z0-9_-]+$/.test(s);

export async function validateIdToken(req: Pick<ExchangeRequest, 'subjectToken' | 'clientId'>, checks: CheckList, c: Pick<TokenSubjectDeps, 'issuer' | 'keys'>, now: number): Promise<Identified> {
  const token = req.subjectToken;
  const parts = token.split('.');
  if (parts.length === 5) checks.fail('id_token.format', 'subject_token is an encrypted JWT (JWE); send the signed ID Token this IdP issued');
  // An unsecured JWS (alg none) has an empty third segment: let it through to id_token.algorithm, which says why.
  if (parts.length !== 3 || !parts.every((s, i) => segment(s) || (i === 2 && s === ''))) checks.fail('id_token.format', 'subject_token is not a JWT: expected three base64url segments separated by dots');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    checks.fail('id_token.format', 'subject_token\'s JOSE header is not valid base64url-encoded JSON');
  }
  if (header.typ !== undefined && !/^(application\/)?jwt$/i.test(header.typ)) {
    checks.fail('id_token.format', `subject_token has typ ${header.typ}; an ID Token is expected (is this an ID-JAG or an access token?)`);
  }
  if (header.crit !== undefined) checks.fail('id_token.format', 'subject_token\'s header has a crit parameter; this IdP\'s ID Tokens carry none');
  checks.pass('id_token.format');

  const alg = KEY_ALGS.id_token;
  if (header.alg !== alg) {
    checks.fail('id_token.algorithm', header.alg === 'none' ? 'subject_token is unsigned (alg none); only signed ID Tokens are accepted'
      : `subject_token is signed with ${String(header.alg)}; this IdP signs ID Tokens with ${alg} only`);
  }
  checks.pass('id_token.algorithm', alg);

  const key = c.keys.keys.find((k) => k.purpose === 'id_token' && k.kid === header.kid);
  if (!key) {
    checks.fail('id_token.key', header.kid === undefined ? 'subject_token has no kid; this IdP\'s ID Tokens name their signing key'
      : `subject_token was signed with key ${header.kid}, which this IdP does not publish for ID Tokens (see jwks_uri)`);
  }
  checks.pass('id_token.key', key.kid);

  let claims: Record<string, unknown>;
  try {
    // in place, not through WebCrypto (src/exchange/jws.ts says why); the header was checked above
    if (!verifiesCompact(token, publicKeyOf(key.publicJwk), alg)) throw new Error('signature');
    claims = JSON.parse(new TextDecoder().decode(payloadOf(token))) as Record<string, unknown>;
    if (!claims || typeof claims !== 'object' || Array.isArray(claims)) throw new Error('not an object');
  } catch {
    checks.fail('id_token.signature', 'subject_token\'s signature does not verify with this IdP\'s key');
  }
  checks.pass('id_token.signature');

  checks.require('id_token.issuer', claims.iss === c.issuer,
    `subject_token was issued by ${JSON.stringify(claims.iss)}, not by this IdP (${c.issuer})`);

  const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
  if (!aud.includes(req.clientId)) {
    checks.fail('id_token.audience', `subject_token audience does not include client ${req.clientId}; exchange an ID Token issued to this client`);
  }
  if (aud.length > 1 && claims.azp !== req.clientId) {
    checks.fail('id_token.audience', `subject_token has several audiences and its azp is ${JSON.stringify(claims.azp)}, not client ${req.clientId}`);
  }
  checks.pass('id_token.audience');

  if (typeof claims.exp !== 'number') checks.fail('id_token.expiry', 'subject_token has no numeric exp claim');
  if (claims.exp + CLOCK_SKEW <= now) {
    checks.fail('id_token.expiry', `subject_token expired at ${new Date(claims.exp * 1000).toISOString()}; sign the user in again or use a refresh token`);
  }
  checks.pass('id_token.expiry');

  if (typeof claims.iat !== 'number') checks.fail('id_token.issued_at', 'subject_token has no numeric iat claim');
  if (claims.iat > now + CLOCK_SKEW) checks.fail('id_token.issued_at', `subject_token's iat (${new Date(claims.iat * 1000).toISOString()}) is in the future`);
  checks.pass('id_token.issued_at');

  if (typeof claims.sub !== 'string' || claims.sub === '') checks.fail('id_token.subject', 'subject_token has no sub claim');
  checks.pass('id_token.subject');

  return {
    sub: claims.sub,
    auth: {
      ...(typeof claims.auth_time === 'number' ? { authTime: claims.auth_time } : {}),
      ...(Array.isArray(claims.amr) ? { amr: claims.amr.filter((a): a is string => typeof a === 'string') } : {}),
      ...(typeof claims.acr === 'string' ? { acr: claims.acr } : {}),
    },
  };
}

/**
 * Through the provider's own model: the same storage, expiry and revocation the refresh_token grant uses,
 * and the same reuse detection: a rotated refresh token presented again by its client means one of two
 * parties holding it is not the user's, so the whole grant is revoked (RFC 9700 §4.14.2), as the provider's
 * refresh_token grant does. The client is told the same thing in every case (see REFRESH_TOKEN_CHECKS).
 */
async function validateRefreshToken(req: ExchangeRequest, checks: CheckList, provider: Provider): Promise<Identified> {
  const refuse = (explanation: string): never =>
    checks.fail('refresh_token', `subject_token is not a live refresh token issued to client ${req.clientId}`, { explanation });
  const rt = await provider.RefreshToken.find(req.subjectToken, { ignoreExpiration: true });
  if (!rt) return refuse('no such refresh token (never issued, revoked or deleted)');
  if (rt.clientId !== req.clientId) return refuse(`refresh token of client ${rt.clientId}, presented by ${req.clientId}`);
  if (rt.consumed) {
    await revokeGrant(provider, rt);
    return refuse(`refresh token already rotated and presented again: grant ${rt.grantId ?? '(none)'} revoked (reuse detection)`);
  }
  if (rt.isExpired) return refuse(`refresh token expired at ${new Date(rt.exp! * 1000).toISOString()}`);
  const grant = rt.grantId ? await provider.Grant.find(rt.grantId) : undefined;
  if (!grant || grant.clientId !== req.clientId || grant.accountId !== rt.accountId) {
    return refuse('the refresh token\'s grant was revoked or has expired');
  }
  checks.pass('refresh_token');
  return {
    sub: rt.accountId!,
    auth: {
      ...(typeof rt.authTime === 'number' ? { authTime: rt.authTime } : {}),
      ...(Array.isArray(rt.amr) ? { amr: rt.amr } : {}),
      ...(typeof rt.acr === 'string' ? { acr: rt.acr } : {}),
    },
  };
}
