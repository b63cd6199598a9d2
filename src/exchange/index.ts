import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { throttledRequest, type Throttled } from '../web/rate-limits.ts';
import { CheckList, describeFailure, RATE_LIMIT_CHECK, REQUEST_CHECKS, type ExchangeErrorCode } from './checks.ts';
import { dupes, exchangeState, grantType, parameters, recordBase, tokenExchangeHandler, UNRECORDED, type ExchangeDeps } from './grant.ts';
import { auditDecision, registeredClient } from './observe.ts';
import { ID_JAG, TOKEN_EXCHANGE } from './request.ts';

export { ID_JAG, TOKEN_EXCHANGE } from './request.ts';
export { EXCHANGE_STAGES, type ExchangeObserver, type ExchangeStage, type ObservedDecision } from './observe.ts';

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
export function exchangeMiddleware(deps: Pick<ExchangeDeps, 'db' | 'log' | 'errors' | 'observe'>) {
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
    if (state.handled || state.audited || !body || typeof body.error !== 'string') return;
    const throttled = throttledRequest(ctx);
    if (throttled) return auditThrottled(ctx as unknown as KoaContextWithOIDC, deps, throttled, state.started);
    if (ctx.status >= 500) {
      // The provider failed before the grant ran (its client lookup reads the database): fail closed the way
      // the grant does, and record the attempt if the database takes it.
      failClosed(ctx, 'the IdP could not decide on this request and issued nothing; retry shortly');
      await auditDecision(deps, {
        ...recordBase(ctx as unknown as KoaContextWithOIDC),
        decision: 'error', reason: 'internal_error', explanation: `the provider answered ${String(body.error)} before the grant ran`,
        error: 'temporarily_unavailable', durationMs: performance.now() - state.started, checks: new CheckList(REQUEST_CHECKS).record,
      }, registeredClient(oidc), state.started).catch((err: unknown) => deps.log.error({ err }, 'audit write failed for a failed token exchange'));
      return;
    }
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
      await auditDecision(deps, {
        ...recordBase(ctx as unknown as KoaContextWithOIDC),
        decision: ctx.status >= 500 ? 'error' : 'denied',
        reason: failed,
        explanation: description,
        error: answered.error,
        durationMs: performance.now() - state.started,
        checks: checks.record,
      }, registeredClient(oidc), state.started);
    } catch (err) {
      // No decision leaves without its audit row: as the grant does, answer that nothing was decided.
      deps.log.error({ err }, 'audit write failed for a refused token exchange');
      failClosed(ctx, UNRECORDED);
    }
  };
}

function failClosed(ctx: Context, description: string) {
  ctx.status = 503;
  ctx.remove('WWW-Authenticate');
  ctx.body = { error: 'temporarily_unavailable', error_description: description };
}

/** A token exchange the rate limit refused (src/web/rate-limits.ts): the client authenticated, the grant never ran. */
async function auditThrottled(ctx: KoaContextWithOIDC, deps: Pick<ExchangeDeps, 'db' | 'log' | 'observe'>, throttled: Throttled, started: number) {
  const checks = new CheckList([...REQUEST_CHECKS.slice(0, 2), RATE_LIMIT_CHECK, ...REQUEST_CHECKS.slice(2)]);
  checks.pass('client_authentication', `authenticated with ${ctx.oidc.client?.clientAuthMethod ?? 'none'}`);
  checks.pass('request_syntax');
  const explanation = `${throttled.key} is over its limit of ${throttled.limit} token requests per minute; told to retry after ${throttled.retryAfter} s`;
  try {
    checks.fail(RATE_LIMIT_CHECK.name, throttled.description, { explanation });
  } catch { /* the refusal is already answered (429) */ }
  try {
    await auditDecision(deps, {
      ...recordBase(ctx),
      decision: 'denied',
      reason: RATE_LIMIT_CHECK.name,
      explanation,
      error: 'temporarily_unavailable',
      durationMs: performance.now() - started,
      checks: checks.record,
    }, registeredClient(ctx.oidc), started);
  } catch (err) {
    // Nothing was issued and the 429 says so: keep it (with its Retry-After) rather than fail closed.
    deps.log.error({ err }, 'audit write failed for a throttled token exchange');
  }
}
