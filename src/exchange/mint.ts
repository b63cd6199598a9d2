import { randomBytes } from 'node:crypto';
import { importJWK, SignJWT } from 'jose';
import type { SigningKey } from '../oidc/keys.ts';
import type { Allow } from '../policy/index.ts';
import type { Subject } from './subject.ts';

export const ID_JAG_TYP = 'oauth-id-jag+jwt';

export interface IdJagClaims {
  iss: string;
  sub: string;
  aud: string;
  client_id: string;
  resource?: string | string[];
  scope?: string;
  auth_time?: number;
  amr?: string[];
  acr?: string;
  email?: string;
  /** RFC 7800 confirmation: the DPoP key the client proved possession of at the exchange (draft §9.8.1) */
  cnf?: { jkt: string };
}

/**
 * The ID-JAG's claims (draft §3) from what the exchange established: who, for which target, what policy granted,
 * and the key a DPoP proof showed (`jkt`), which binds it.
 */
export function idJagClaims(issuer: string, subject: Subject, audience: string, resources: string[], decision: Pick<Allow, 'rsClientId' | 'scopes'>, jkt?: string): IdJagClaims {
  return {
    iss: issuer,
    sub: subject.user.sub,
    aud: audience,
    client_id: decision.rsClientId,
    ...(resources.length === 1 ? { resource: resources[0]! } : resources.length > 1 ? { resource: resources } : {}),
    scope: decision.scopes.join(' '),
    ...(subject.authTime !== undefined ? { auth_time: subject.authTime } : {}),
    ...(subject.amr?.length ? { amr: subject.amr } : {}),
    ...(subject.acr ? { acr: subject.acr } : {}),
    ...(subject.user.email ? { email: subject.user.email } : {}),
    ...(jkt === undefined ? {} : { cnf: { jkt } }),
  };
}

export interface Minted {
  /** the signed ID-JAG; absent from a preview */
  jwt?: string;
  jti: string;
  iat: number;
  exp: number;
}

/** What the exchange issues with: the real signer at the token endpoint, a preview in the simulator. */
export interface Minter {
  mint(claims: IdJagClaims, lifetime: number, now: number): Promise<Minted>;
  /** what the `issue` check says of what was minted */
  describe(minted: Minted): string;
}

/** Signs with the IdP's active ID-JAG key (looked up per call: a rotation takes effect at once). */
export function signingMinter(key: () => SigningKey): Minter {
  return {
    mint: (claims, lifetime, now) => mintIdJag(key(), claims, lifetime, now),
    describe: (m) => `jti ${m.jti}, expires ${new Date(m.exp * 1000).toISOString()}`,
  };
}

/** The simulator's minter: the claims and lifetime, nothing signed. */
export const previewMinter: Minter = {
  mint: async (_claims, lifetime, now) => ({ jti: '(preview)', iat: now, exp: now + lifetime }),
  describe: (m) => `preview, not signed: would expire ${new Date(m.exp * 1000).toISOString()}`,
};

const signingKeys = new Map<string, ReturnType<typeof importJWK>>();

/** Signs an ID-JAG (draft §3) with the IdP's active ID-JAG key: `typ` oauth-id-jag+jwt, `kid` of that key. */
export async function mintIdJag(key: SigningKey, claims: IdJagClaims, lifetime: number, now: number): Promise<Minted & { jwt: string }> {
  let imported = signingKeys.get(key.kid);
  if (!imported) {
    imported = importJWK(key.privateJwk, key.alg);
    signingKeys.set(key.kid, imported);
  }
  const jti = randomBytes(18).toString('base64url');
  const exp = now + lifetime;
  const jwt = await new SignJWT({ ...claims })
    .setProtectedHeader({ alg: key.alg, typ: ID_JAG_TYP, kid: key.kid })
    .setJti(jti)
    .setIssuedAt(now)
    .setExpirationTime(exp)
    .sign(await imported);
  return { jwt, jti, iat: now, exp };
}
