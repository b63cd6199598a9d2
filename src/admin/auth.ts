import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';

/**
 * The admin API's bearer authentication (RFC 6750). A caller presents an opaque access token this provider
 * issued with the client_credentials grant; it is looked up through the provider's own model, so expiry,
 * revocation and the storage format are the provider's.
 *
 * `admin` in the token's scope is necessary but not enough: the provider lets a client without a `scope`
 * in its metadata request any scope it knows, so the client's registered scope must name `admin` too (and
 * the client must be a confidential one, still enabled). Both are read per request, so removing `admin`
 * from a client, or disabling it, shuts its tokens out at once.
 */

export const ADMIN_SCOPE = 'admin';
const REALM = 'idjag-admin';

export interface AdminPrincipal {
  /** what the change log records */
  actor: string;
  clientId: string;
  scopes: string[];
  /** epoch seconds */
  expiresAt: number | undefined;
}

const TOKEN68 = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i;

function refuse(ctx: Context, status: 401 | 403, challenge: string, error: string, description: string): void {
  ctx.status = status;
  ctx.set('WWW-Authenticate', challenge);
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error, error_description: description };
}

async function findPrincipal(provider: Provider, header: string): Promise<{ principal?: AdminPrincipal; invalid?: string; insufficient?: string }> {
  const value = TOKEN68.exec(header)?.[1];
  if (!value) return { invalid: 'the Authorization header is not a Bearer token' };
  const token = await provider.ClientCredentials.find(value);
  if (!token || !token.clientId) return { invalid: 'the access token is unknown, expired or revoked' };
  // A sender-constrained token (DPoP, mTLS) presented as a plain bearer token has lost its proof.
  if (token.jkt || token['x5t#S256']) return { invalid: 'sender-constrained access tokens are not accepted here' };
  // Issued for a resource indicator: an access token for another resource server, not for this IdP.
  if (token.aud !== undefined) return { invalid: 'the access token was issued for another resource' };
  const client = await provider.Client.find(token.clientId);
  if (!client) return { invalid: `client ${token.clientId} is unknown or disabled` };
  const scopes = (token.scope ?? '').split(' ').filter(Boolean);
  const principal = { actor: `client:${client.clientId}`, clientId: client.clientId, scopes, expiresAt: token.exp };
  const granted = (client.scope ?? '').split(' ').includes(ADMIN_SCOPE) && client.clientAuthMethod !== 'none';
  if (!scopes.includes(ADMIN_SCOPE)) return { principal, insufficient: `the access token lacks the ${ADMIN_SCOPE} scope: request it with scope=${ADMIN_SCOPE}` };
  if (!granted) return { principal, insufficient: `client ${client.clientId} is not granted the ${ADMIN_SCOPE} scope` };
  return { principal };
}

/** Sets `ctx.state.admin`, or answers 401 (no valid token) or 403 (a valid token without the admin scope). */
export function requireAdminToken(provider: () => Provider) {
  return async (ctx: Context, next: Next) => {
    const header = ctx.get('authorization');
    if (!header) {
      return refuse(ctx, 401, `Bearer realm="${REALM}", scope="${ADMIN_SCOPE}"`, 'invalid_request',
        `a Bearer access token is required: a client_credentials token of this IdP with scope ${ADMIN_SCOPE}`);
    }
    const found = await findPrincipal(provider(), header);
    if (found.invalid !== undefined) {
      return refuse(ctx, 401, `Bearer realm="${REALM}", error="invalid_token", error_description="${found.invalid.replace(/"/g, "'")}"`, 'invalid_token', found.invalid);
    }
    if (found.insufficient !== undefined) {
      return refuse(ctx, 403, `Bearer realm="${REALM}", error="insufficient_scope", scope="${ADMIN_SCOPE}"`, 'insufficient_scope', found.insufficient);
    }
    ctx.state.admin = found.principal;
    return next();
  };
}

declare module 'koa' {
  interface DefaultState {
    /** the admin API's caller, once requireAdminToken has let it through */
    admin?: AdminPrincipal;
  }
}
