import type { ClaimRelease, ReleasableClaim } from '../db/catalog.ts';
import type { Subject } from './subject.ts';

/**
 * What an ID-JAG says about the user beyond `sub`: chosen per Resource AS, because each one is another party
 * that learns it. The draft (§3) RECOMMENDS `email` and/or `aud_sub` so the Resource AS can find its account
 * for the user; the MCP extension asks that email addresses be left out unless strictly necessary. So a new
 * Resource AS gets none of the identity claims, and an admin releases the ones it needs.
 */

export { NO_RELEASE, RELEASABLE_CLAIMS, SUB_ID_FORMATS, type ClaimRelease, type ReleasableClaim, type SubIdFormat } from '../db/catalog.ts';

export type SubjectIdentifier =
  | { format: 'email'; email: string }
  | { format: 'iss_sub'; iss: string; sub: string }
  | { format: 'opaque'; id: string };

export interface IdentityClaims {
  email?: string;
  email_verified?: boolean;
  name?: string;
  preferred_username?: string;
  groups?: string[];
  aud_sub?: string;
  sub_id?: SubjectIdentifier;
  tenant?: string;
  aud_tenant?: string;
}

export interface ReleaseFacts {
  /** this IdP's issuer (for an `iss_sub` subject identifier) */
  issuer: string;
  /** this IdP's tenant (configuration), carried by every ID-JAG when set */
  tenant?: string | undefined;
  subject: Subject;
  release: ClaimRelease;
  /** the user's subject identifier at this Resource AS, when the admin mapped one */
  audSub?: string | undefined;
}

/** The subject identifier the Resource AS asked for, when the user has what it needs. */
function subjectIdentifier(f: ReleaseFacts): SubjectIdentifier | undefined {
  switch (f.release.subIdFormat) {
    case 'email': return f.subject.user.email ? { format: 'email', email: f.subject.user.email } : undefined;
    case 'iss_sub': return { format: 'iss_sub', iss: f.issuer, sub: f.subject.user.sub };
    case 'opaque': return f.audSub === undefined ? undefined : { format: 'opaque', id: f.audSub };
    default: return undefined;
  }
}

/** The identity claims of one ID-JAG: the released ones the user has, `aud_sub`, `sub_id` and the tenants. */
export function identityClaims(f: ReleaseFacts): IdentityClaims {
  const { user, groups } = f.subject;
  const released = new Set(f.release.claims);
  const subId = subjectIdentifier(f);
  return {
    ...(released.has('email') && user.email ? { email: user.email } : {}),
    ...(released.has('email_verified') && user.email ? { email_verified: Boolean(user.email_verified) } : {}),
    ...(released.has('name') && user.name ? { name: user.name } : {}),
    ...(released.has('preferred_username') ? { preferred_username: user.username } : {}),
    ...(released.has('groups') ? { groups: [...groups] } : {}),
    ...(f.audSub === undefined ? {} : { aud_sub: f.audSub }),
    ...(subId ? { sub_id: subId } : {}),
    ...(f.tenant ? { tenant: f.tenant } : {}),
    ...(f.release.audTenant ? { aud_tenant: f.release.audTenant } : {}),
  };
}
