import type { Context, Next } from 'koa';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { exchangeState, type Throttled } from '../web/state.ts';
import { CheckList, describeFailure, RATE_LIMIT_CHECK, REQUEST_CHECKS, type ExchangeErrorCode } from './checks.ts';
import { recordBase, UNRECORDED, type ExchangeDeps } from './grant.ts';
import { auditDecision, registeredClient } from './observe.ts';
import type { DecisionFields } from './pipeline.ts';
import { TOKEN_EXCHANGE } from './request.ts';

/**
 * Token-exchange requests refused before the grant ran: by the provider (client authentication, repeated
 * parameters, scope syntax, its own faults) or by a rate limit. They get the same audit row as the grant's
 * refusals, written before the response leaves, and the same error_description.
 */

type Fields = Omit<DecisionFields, 'sub' | 'username' | 'scopesGranted' | 'ruleIds' | 'jti' | 'exp' | 'warnings'>;

/** A rate limit refused it: before client authentication (failed authentications) or after it (token requests). */
export function throttledFields(throttled: Throttled, authMethod: string | undefined): Fields {
  const checks = throttled.limit === 'client_authentication'
    ? new CheckList([RATE_LIMIT_CHECK, ...REQUEST_CHECKS])
    : new CheckList([...REQUEST_CHECKS.slice(0, 2), RATE_LIMIT_CHECK, ...REQUEST_CHECKS.slice(2)]);
  if (throttled.limit === 'token') {
    checks.pass('client_authentication', `authenticated with ${authMethod ?? 'none'}`);
    checks.pass('request_syntax');
  }
  checks.failed(RATE_LIMIT_CHECK.name, throttled.description, { explanation: throttled.explanation });
  return { decision: 'denied', reason: RATE_LIMIT_CHECK.name, explanation: throttled.explanation, error: 'temporarily_unavailable', checks: checks.record };
}

/** The provider refused it: failed client authentication, or a malformed request from an authenticated client. */
export function providerRefusalFields(error: string, description: string, authenticated: boolean): Fields & { check: string } {
  const checks = new CheckList(REQUEST_CHECKS);
  const check = error === 'invalid_client' ? 'client_authentication' : 'request_syntax';
  // only when the provider got as far as an authenticated client (a malformed or missing client auth is invalid_request too)
  if (check === 'request_syntax' && authenticated) checks.pass('client_authentication');
  checks.failed(check, description);
  return { decision: 'denied', reason: check, explanation: description, error, checks: checks.record, check };
}

/** The provider failed before the grant ran (its client lookup reads the database). */
export function providerFaultFields(error: string): Fields {
  return {
    decision: 'error', reason: 'internal_error', explanation: `the provider answered ${error} before the grant ran`,
    error: 'temporarily_unavailable', checks: new CheckList(REQUEST_CHECKS).record,
  };
}

function failClosed(ctx: Context, description: string) {
  ctx.status = 503;
  ctx.remove('WWW-Authenticate');
  ctx.body = { error: 'temporarily_unavailable', error_description: description };
}

/**
 * Wraps the provider at the token endpoint: a token-exchange request the provider refused before the grant
 * ran still gets its audit row (and no answer leaves without one), and a step-up refusal carries `max_age`
 * (RFC 9470 §3), which the provider's error body has no field for.
 */
export function exchangeRefusals(deps: Pick<ExchangeDeps, 'db' | 'log' | 'errors' | 'observe'>) {
  return async (ctx: Context, next: Next) => {
    if (ctx.method !== 'POST') return next();
    const state = exchangeState(ctx);
    await next();
    const oidc = (ctx as unknown as KoaContextWithOIDC).oidc;
    if (oidc?.route !== 'token' || oidc.params?.grant_type !== TOKEN_EXCHANGE) return;
    const body = ctx.body as Record<string, unknown> | undefined;
    if (state.maxAge !== undefined && body?.error === 'insufficient_user_authentication') ctx.body = { ...body, max_age: state.maxAge };
    if (state.handled || state.audited || !body || typeof body.error !== 'string') return;

    const record = (fields: Fields) => auditDecision(deps, { ...recordBase(ctx as unknown as KoaContextWithOIDC), ...fields, durationMs: performance.now() - state.started }, registeredClient(oidc), state.started);
    if (ctx.state.throttled) {
      // Nothing was issued and the 429 says so: keep it (with its Retry-After) even if the row cannot be written.
      await record(throttledFields(ctx.state.throttled, oidc.client?.clientAuthMethod))
        .catch((err: unknown) => deps.log.error({ err }, 'audit write failed for a throttled token exchange'));
      return;
    }
    if (ctx.status >= 500) {
      failClosed(ctx, 'the IdP could not decide on this request and issued nothing; retry shortly');
      await record(providerFaultFields(body.error)).catch((err: unknown) => deps.log.error({ err }, 'audit write failed for a failed token exchange'));
      return;
    }
    const description = typeof body.error_description === 'string' ? body.error_description : body.error;
    const { check, ...fields } = providerRefusalFields(body.error, description, Boolean(oidc.client));
    ctx.body = { ...body, error_description: describeFailure(deps.errors, body.error as ExchangeErrorCode, check, description) };
    try {
      await record(fields);
    } catch (err) {
      // No decision leaves without its audit row: as the grant does, answer that nothing was decided.
      deps.log.error({ err }, 'audit write failed for a refused token exchange');
      failClosed(ctx, UNRECORDED);
    }
  };
}
