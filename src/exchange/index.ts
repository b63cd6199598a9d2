import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { recordDecision } from '../audit/index.ts';
import { CheckList, describeFailure, REQUEST_CHECKS, type ExchangeErrorCode } from './checks.ts';
import { dupes, exchangeState, grantType, parameters, recordBase, tokenExchangeHandler, type ExchangeDeps } from './grant.ts';
import { ID_JAG, TOKEN_EXCHANGE } from './request.ts';

export { ID_JAG, TOKEN_EXCHANGE } from './request.ts';

/** RFC 8693 token exchange for ID-JAGs, as a grant of the provider. */
export function registerTokenExchange(provider: Provider, deps: ExchangeDeps): void {
  provider.registerGrantType(grantType, tokenExchangeHandler(deps), parameters, dupes);
  // The provider refuses a client whose grant_types lack the grant with invalid_request, before the handler
  // runs. SPEC.md wants unauthorized_client (and an audit row), so let every client reach the handler, which
  // makes that decision itself (check grant_type_allowed).
  const allowed = provider.Client.prototype.grantTypeAllowed;
  provider.Client.prototype.grantTypeAllowed = function grantTypeAllowed(this: InstanceType<Provider['Client']>, type: string) {
    return type === TOKEN_EXCHANGE || allowed.call(this, type);
  };
}

/** Discovery additions (draft §7). */
export const discoveryMetadata = {
  identity_chaining_requested_token_types_supported: [ID_JAG],
};

/**
 * Wraps the provider. Two duties at the token endpoint:
 * - a token-exchange request the provider refused before the grant ran (client authentication, repeated
 *   parameters, scope syntax) still gets its audit row, written before the response leaves;
 * - a step-up refusal carries `max_age` (RFC 9470), which the provider's error body has no field for.
 * And MCP clients discover the token endpoint from RFC 8414 metadata: serve the OpenID discovery document
 * there too.
 */
export function exchangeMiddleware(deps: Pick<ExchangeDeps, 'db' | 'log' | 'errors'>) {
  return async (ctx: Context, next: Next) => {
    if (ctx.method === 'GET' && ctx.path === '/.well-known/oauth-authorization-server') {
      ctx.path = '/.well-known/openid-configuration';
      return next();
    }
    if (ctx.method !== 'POST') return next();
    const state = exchangeState(ctx);
    await next();
    const oidc = (ctx as unknown as KoaContextWithOIDC).oidc;
    if (oidc?.route !== 'token' || oidc.params?.grant_type !== TOKEN_EXCHANGE) return;
    const body = ctx.body as Record<string, unknown> | undefined;
    if (state.maxAge !== undefined && body?.error === 'insufficient_user_authentication') {
      ctx.body = { ...body, max_age: state.maxAge };
    }
    if (state.audited || !body || typeof body.error !== 'string') return;
    if (!oidc.client && body.error === 'invalid_request' && body.error_description === 'no client authentication mechanism provided') {
      // RFC 6749 §5.2 and SPEC.md: a request with no client authentication at all is invalid_client (401).
      ctx.status = 401;
      ctx.set('WWW-Authenticate', `Basic realm="${oidc.provider.issuer}"`);
      ctx.body = { error: 'invalid_client', error_description: 'client authentication is required: use client_secret_basic, client_secret_post or private_key_jwt' };
    }
    const answered = ctx.body as { error: string; error_description?: string };
    const checks = new CheckList(REQUEST_CHECKS);
    const description = answered.error_description ?? answered.error;
    const failed = answered.error === 'invalid_client' ? 'client_authentication' : 'request_syntax';
    ctx.body = { ...answered, error_description: describeFailure(deps.errors, answered.error as ExchangeErrorCode, failed, description) };
    // only when the provider got as far as an authenticated client (a malformed or missing client auth is invalid_request too)
    if (failed === 'request_syntax' && oidc.client) checks.pass('client_authentication');
    try {
      checks.fail(failed, description);
    } catch { /* the rejection is already answered by the provider */ }
    try {
      await recordDecision(deps.db, {
        ...recordBase(ctx as unknown as KoaContextWithOIDC),
        decision: ctx.status >= 500 ? 'error' : 'denied',
        reason: failed,
        explanation: description,
        error: answered.error,
        durationMs: performance.now() - state.started,
        checks: checks.record,
      });
    } catch (err) {
      deps.log.error({ err }, 'audit write failed for a refused token exchange');
    }
  };
}
