import Provider, { errors, type Configuration, type KoaContextWithOIDC, type TokenEndpointGrantContext } from 'oidc-provider';
import type { Logger } from 'pino';
import type { DB } from '../db/index.ts';
import { DPOP_ALGS } from '../dpop/proof.ts';
import type { Render } from '../web/views.ts';
import { accountFinder } from './accounts.ts';
import { adapterFactory } from './adapter.ts';
import { guardClientAuthentication, type ClientAuthGate } from './client-auth.ts';
import type { KeySet } from './keys.ts';
import { VerifiedSecretCache } from './secrets.ts';

export interface ProviderDeps {
  db: DB;
  issuer: string;
  keys: KeySet;
  cookieKeys: string[];
  render: Render;
  log: Logger;
  secure: boolean;
  /** called with the fresh provider before it serves any request: where custom grants register */
  extend?: (provider: Provider, keys: KeySet) => void;
  /** extra discovery metadata */
  discovery?: Record<string, unknown>;
  /**
   * wraps the handler of every grant, the provider's own and those `extend` registers: it runs after client
   * authentication and before the grant does any work (the token endpoint's rate limit)
   */
  wrapGrant?: GrantWrapper;
  /** may refuse a client authentication before its secret is checked, and hears of every failure */
  clientAuth?: ClientAuthGate;
}

export type GrantHandler = (ctx: TokenEndpointGrantContext) => void | Promise<void>;
export type GrantWrapper = (grantType: string, handler: GrantHandler) => GrantHandler;
type GrantParameterNames = Parameters<Provider['registerGrantType']>[2];

/**
 * oidc-provider registers its own grants through `registerGrantType` while it is being constructed, so
 * overriding that public method in a subclass is the one way to reach every grant's handler.
 */
function providerClass(wrap: GrantWrapper | undefined): typeof Provider {
  if (!wrap) return Provider;
  return class extends Provider {
    override registerGrantType<Params extends object>(
      name: string,
      handler: (ctx: TokenEndpointGrantContext<Params>) => void | Promise<void>,
      params?: GrantParameterNames,
      dupes?: GrantParameterNames,
    ): void {
      super.registerGrantType(name, wrap(name, handler as GrantHandler), params, dupes);
    }
  };
}

/** Token lifetimes, in seconds. ID Tokens and access tokens are short; the session and refresh token carry the login. */
export const TTL = {
  AccessToken: 3600,
  AuthorizationCode: 60,
  ClientCredentials: 600,
  IdToken: 3600,
  Interaction: 3600,
  Grant: 14 * 24 * 3600,
  Session: 14 * 24 * 3600,
  RefreshToken: 14 * 24 * 3600,
} as const;

export const SCOPES = ['openid', 'offline_access', 'email', 'profile', 'groups', 'admin'];

// One verified-secret cache per process, shared across provider rebuilds (key rotation).
const verifiedSecrets = new VerifiedSecretCache();

export function buildProvider(deps: ProviderDeps): Provider {
  const { render } = deps;
  const cookieFlags = { httpOnly: true, sameSite: 'lax', secure: deps.secure } as const;

  const configuration: Configuration = {
    adapter: adapterFactory(deps.db),
    findAccount: accountFinder(deps.db),
    jwks: { keys: deps.keys.keys.map((k) => k.privateJwk) as never },
    cookies: {
      keys: deps.cookieKeys,
      names: { session: 'idjag.session', interaction: 'idjag.interaction', resume: 'idjag.resume' },
      long: { ...cookieFlags, signed: true },
      short: { ...cookieFlags, signed: true },
    },
    claims: {
      sid: null,
      // How and when the user signed in travels with every ID Token: the exchange copies it into the ID-JAG
      // and a step-up rule reads auth_time.
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: SCOPES,
    responseTypes: ['code'],
    pkce: { required: () => true },
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'],
    enabledJWA: {
      // The ES256 key is reserved for ID-JAGs: ID Tokens are RS256 only, so the two never share a key.
      idTokenSigningAlgValues: ['RS256'],
      clientAuthSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA'],
      // what discovery advertises as dpop_signing_alg_values_supported: the algorithms the token exchange
      // accepts in a DPoP proof (src/dpop/proof.ts), which the provider's own grants then accept too
      dPoPSigningAlgValues: [...DPOP_ALGS],
    },
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
    // The ID Token is what the client exchanges for an ID-JAG, and readers of this reference IdP want to see
    // the user in it: keep the profile claims in the ID Token even when an access token is issued too.
    conformIdTokenClaims: false,
    // Every refresh rotates the refresh token: a stolen one is good for one use, and a replay of a rotated one
    // is detected (and, with the atomic consume in the adapter, two racing redemptions cannot both win).
    rotateRefreshToken: true,
    ttl: { ...TTL },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // A client may introspect and revoke the tokens issued to it, and no one else's.
      introspection: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      // This IdP's access tokens are for itself only (userinfo, the admin API): no other resource server.
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        getResourceServerInfo: async (_ctx, resource) => {
          throw new errors.InvalidTarget(`this IdP issues access tokens for itself only, not for ${resource}`);
        },
      },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.type = 'html';
          ctx.body = render('logout', { title: 'Sign out', form, clientName: ctx.oidc.client?.clientName });
        },
        async postLogoutSuccessSource(ctx) {
          ctx.type = 'html';
          ctx.body = render('logged-out', { title: 'Signed out', clientName: ctx.oidc.client?.clientName });
        },
      },
    },
    discovery: { ...deps.discovery },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    async renderError(ctx, out, error) {
      if ((error as { statusCode?: number }).statusCode === undefined || (error as { statusCode: number }).statusCode >= 500) {
        deps.log.error({ err: error }, 'provider error page');
      }
      ctx.type = 'html';
      ctx.body = render('error', { title: 'Something went wrong', error: out.error, description: out.error_description });
    },
  };

  const provider = new (providerClass(deps.wrapGrant))(deps.issuer, configuration);
  guardClientAuthentication(provider, deps.clientAuth, verifiedSecrets);
  provider.on('server_error', (ctx: KoaContextWithOIDC, err: Error) => {
    deps.log.error({ err, path: ctx.path }, 'provider server_error');
  });
  deps.extend?.(provider, deps.keys);
  return provider;
}
