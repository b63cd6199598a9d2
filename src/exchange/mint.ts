import { issuedDescription } from '../audit/codec.ts';
import { uuidv7 } from '../audit/index.ts';
import type { SigningKey } from '../oidc/keys.ts';
import type { Allow } from '../policy/index.ts';
import type { AuthorizationDetail } from './details.ts';
import { privateKeyOf, signCompact, type JwsAlg } from './jws.ts';
import { identityClaims, type ClaimRelease, type IdentityClaims } from './release.ts';
import type { Subject } from './subject.ts';

export const ID_JAG_TYP = 'oauth-id-jag+jwt';

export interface IdJagClaims extends IdentityClaims {
  iss: string;
  sub: string;
  aud: string;
  client_id: string;
  resource?: string | string[];
  scope?: string;
  auth_time?: number;
  amr?: string[];
  acr?: string;
  /** the RFC 9396 objects granted */
  authorization_details?: AuthorizationDetail[];
  /** RFC 7800 confirmation: the DPoP key the client proved possession of at the exchange (draft §9.8.1) */
  cnf?: { jkt: string };
}

/** What the exchange established, as the ID-JAG's claims need it. */
export interface ClaimFacts {
  issuer: string;
  /** this IdP's tenant, when configured */
  tenant?: string | undefined;
  subject: Subject;
  /** the Resource AS: its issuer is the `aud`; its release says which identity claims it receives */
  resourceServer: { issuer: string; release: ClaimRelease };
  /** the user's subject identifier at that Resource AS, when mapped */
  audSub?: string | undefined;
  resources: string[];
  decision: Pick<Allow, 'rsClientId' | 'scopes'>;
  /** the authorization_details objects granted, when any were requested */
  authorizationDetails?: AuthorizationDetail[] | undefined;
  /** the thumbprint of the key a DPoP proof showed at the exchange: it binds the ID-JAG */
  jkt?: string | undefined;
}

/**
 * The ID-JAG's claims (draft §3) from what the exchange established: who, for which target, what policy
 * granted, and what this Resource AS may learn about the user (src/exchange/release.ts).
 */
export function idJagClaims(f: ClaimFacts): IdJagClaims {
  const { subject } = f;
  return {
    iss: f.issuer,
    sub: subject.user.sub,
    aud: f.resourceServer.issuer,
    client_id: f.decision.rsClientId,
    ...(f.resources.length === 1 ? { resource: f.resources[0]! } : f.resources.length > 1 ? { resource: f.resources } : {}),
    scope: f.decision.scopes.join(' '),
    ...(subject.authTime !== undefined ? { auth_time: subject.authTime } : {}),
    ...(subject.amr?.length ? { amr: subject.amr } : {}),
    ...(subject.acr ? { acr: subject.acr } : {}),
    ...identityClaims({ issuer: f.issuer, tenant: f.tenant, subject, release: f.resourceServer.release, audSub: f.audSub }),
    ...(f.authorizationDetails?.length ? { authorization_details: f.authorizationDetails } : {}),
    ...(f.jkt === undefined ? {} : { cnf: { jkt: f.jkt } }),
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

/**
 * Signs with the IdP's active ID-JAG key (looked up per call: a rotation takes effect at once). `jti`: the
 * token's id, when the request has one for it (its audit row's id); a fresh UUIDv7 otherwise.
 */
export function signingMinter(key: () => SigningKey, jti?: string): Minter {
  return {
    mint: (claims, lifetime, now) => mintIdJag(key(), claims, lifetime, now, jti),
    describe: (m) => issuedDescription(m.jti, m.exp),
  };
}

/** The simulator's minter: the claims and lifetime, nothing signed. */
export const previewMinter: Minter = {
  mint: async (_claims, lifetime, now) => ({ jti: '(preview)', iat: now, exp: now + lifetime }),
  describe: (m) => `preview, not signed: would expire ${new Date(m.exp * 1000).toISOString()}`,
};

/**
 * Signs an ID-JAG (draft §3) with the IdP's active ID-JAG key: `typ` oauth-id-jag+jwt, `kid` of that key. The
 * `jti` is a UUIDv7 (RFC 9562 §5.7: 74 random bits besides the time, which `iat` tells anyway). Signed in place
 * (src/exchange/jws.ts says why not through WebCrypto).
 */
export async function mintIdJag(key: SigningKey, claims: IdJagClaims, lifetime: number, now: number, jti = uuidv7()): Promise<Minted & { jwt: string }> {
  const exp = now + lifetime;
  const jwt = signCompact({ alg: key.alg as JwsAlg, typ: ID_JAG_TYP, kid: key.kid }, { ...claims, jti, iat: now, exp }, privateKeyOf(key.privateJwk));
  return { jwt, jti, iat: now, exp };
}
