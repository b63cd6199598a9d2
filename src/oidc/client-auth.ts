import type { Context, Next } from 'koa';
import Provider, { type KoaContextWithOIDC } from 'oidc-provider';
import { basicCredentials } from '../web/basic-auth.ts';
import { OAuthError } from '../web/errors.ts';
import { verifyAgainstNothing, type VerifiedSecretCache } from './secrets.ts';

/**
 * Client authentication as the provider does it, with three things added wherever the provider checks a
 * client secret (token, introspection, revocation), whatever path spelling reached it:
 * - a gate that may refuse the attempt before the secret is looked at (the failed-authentication throttle);
 * - every failure reported to that gate;
 * - the same scrypt for an unknown client id (or a client that has no secret) as for a wrong secret, so the
 *   response time does not tell which client ids exist.
 */

export type ClientAuthVerdict =
  | { allowed: true }
  | { allowed: false; by: 'ip' | 'client'; retryAfter: number; description: string; explanation: string };

export interface ClientAuthGate {
  /** before a client secret is looked at: may this address try to authenticate as this client now? */
  admit(ip: string, clientId: string): Promise<ClientAuthVerdict>;
  /** after a client secret failed (or named no client that has one) */
  failed(ip: string, clientId: string): Promise<void>;
}

const SECRET_METHODS = new Set(['client_secret_basic', 'client_secret_post']);

/** The secret this request presents for `clientId`, if the provider is authenticating a client by secret right now. */
function presentedSecret(ctx: KoaContextWithOIDC | undefined, clientId: string): string | undefined {
  const oidc = ctx?.oidc;
  if (!oidc || oidc.entities.Client) return undefined;
  const posted = (oidc.params as Record<string, unknown> | undefined)?.client_secret;
  if (typeof posted === 'string' && posted !== '') return posted;
  const basic = basicCredentials(ctx.get('authorization'));
  return basic?.id === clientId && basic.secret !== '' ? basic.secret : undefined;
}

/** A refusal by the gate, as the provider's error handler renders it (429, Retry-After). */
function refusal(ctx: KoaContextWithOIDC, verdict: Extract<ClientAuthVerdict, { allowed: false }>): Error {
  ctx.set('Retry-After', String(verdict.retryAfter));
  ctx.state.throttled = { limit: 'client_authentication', retryAfter: verdict.retryAfter, description: verdict.description, explanation: verdict.explanation };
  return new OAuthError('temporarily_unavailable', verdict.description, 429);
}

/**
 * The provider has no hook around client authentication, but it reaches clients through `Client.find` and
 * secrets through `compareClientSecret`, and it keeps the request in an AsyncLocalStorage (`Provider.ctx`).
 */
export function guardClientAuthentication(provider: Provider, gate: ClientAuthGate | undefined, secrets: VerifiedSecretCache): void {
  const Client = provider.Client;
  const find = Client.find.bind(Client);
  Client.find = async (id: string) => {
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    const secret = presentedSecret(ctx, id);
    if (!ctx || secret === undefined) return find(id);
    const verdict = await gate?.admit(ctx.ip, id);
    if (verdict && !verdict.allowed) throw refusal(ctx, verdict);
    const client = await find(id);
    if (!client || !SECRET_METHODS.has(client.clientAuthMethod ?? '')) {
      await verifyAgainstNothing(secret);
      await gate?.failed(ctx.ip, id);
    }
    return client;
  };
  Client.prototype.compareClientSecret = async function compareClientSecret(this: { clientId: string; clientSecret?: string }, actual: string) {
    const ok = this.clientSecret ? await secrets.verify(actual, this.clientSecret) : false;
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    if (!ok && ctx) await gate?.failed(ctx.ip, this.clientId);
    return ok;
  };
}

/** The provider's routes that authenticate clients. */
const CLIENT_AUTH_ROUTES = new Set(['token', 'introspection', 'revocation', 'pushed_authorization_request']);

/**
 * What the provider answers `400 invalid_request` but RFC 6749 §5.2 calls `invalid_client`: no client
 * authentication at all, or HTTP Basic with an empty secret. These become `401 invalid_client` with a
 * `WWW-Authenticate` challenge, on every route that authenticates clients.
 */
const MISSING_CREDENTIALS: Record<string, string> = {
  'no client authentication mechanism provided': 'client authentication is required: use client_secret_basic, client_secret_post or private_key_jwt',
  'client_secret must be provided in the Authorization header': 'the client secret in the Authorization header is empty',
};

export async function clientAuthErrors(ctx: Context, next: Next): Promise<void> {
  await next();
  const oidc = (ctx as unknown as KoaContextWithOIDC).oidc;
  if (!oidc?.route || !CLIENT_AUTH_ROUTES.has(oidc.route) || ctx.status !== 400) return;
  const body = ctx.body as { error?: unknown; error_description?: unknown } | undefined;
  const description = body?.error === 'invalid_request' && typeof body.error_description === 'string' ? MISSING_CREDENTIALS[body.error_description] : undefined;
  if (description === undefined) return;
  ctx.status = 401;
  ctx.set('WWW-Authenticate', `Basic realm="${oidc.provider.issuer}"`);
  ctx.body = { error: 'invalid_client', error_description: description };
}
