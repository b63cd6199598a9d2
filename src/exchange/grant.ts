import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import type { DecisionRecord } from '../audit/index.ts';
import { now, type DB } from '../db/index.ts';
import { activeKey, type KeySet } from '../oidc/keys.ts';
import { decide, type Deny } from '../policy/index.ts';
import { CheckList, DECISION_CHECKS, describeFailure, ExchangeRejection, REQUEST_CHECKS, type ErrorDetail } from './checks.ts';
import { lintRequest, lintTarget, type Warning } from './lint.ts';
import { idJagClaims, mintIdJag } from './mint.ts';
import { auditDecision, registeredClient, stageClock, type ExchangeObserver } from './observe.ts';
import { ID_JAG, parseRequest, requestFacts, PARAMETERS, REPEATABLE, TOKEN_EXCHANGE } from './request.ts';
import { subjectChecks, validateSubject } from './subject.ts';
import { loadRules, resolveTarget } from './target.ts';

export const grantType = TOKEN_EXCHANGE;
export const parameters = new Set<string>(PARAMETERS);
export const dupes = new Set<string>(REPEATABLE);

export interface ExchangeDeps {
  db: DB;
  issuer: string;
  log: Logger;
  /** how much error_description says (verbose in development, minimal in production) */
  errors: ErrorDetail;
  keys: () => KeySet;
  /** measurements (src/metrics): how long each stage took, and each decision as its audit row is written */
  observe?: ExchangeObserver | undefined;
}

/** Per-request state the audit guard reads after the provider has answered. */
export interface ExchangeState {
  started: number;
  /** the grant ran: it answered, and audited or failed closed, itself */
  handled?: boolean;
  audited?: boolean;
  maxAge?: number;
}

export const exchangeState = (ctx: { state: Record<string, unknown> }): ExchangeState =>
  (ctx.state.exchange ??= { started: performance.now() }) as ExchangeState;

export type RecordBase = Omit<DecisionRecord, 'decision' | 'reason' | 'explanation' | 'checks' | 'warnings'> & { warnings?: Warning[] };

/** What every audit row of a token-exchange request says about the request, whatever its outcome. */
export function recordBase(ctx: KoaContextWithOIDC): RecordBase {
  const facts = requestFacts(ctx);
  return {
    requestId: String(ctx.state.requestId ?? ''),
    clientId: facts.clientId,
    subjectTokenType: facts.subjectTokenType,
    audience: facts.audience,
    resources: facts.resources,
    scopesRequested: facts.scopes,
    ip: ctx.ip,
    userAgent: ctx.get('user-agent') || undefined,
  };
}

/** Which check a policy denial fails: the policy engine reasons, the check list files the reason. */
function checkFor(d: Deny): string {
  switch (d.reason) {
    case 'user_disabled': return 'user';
    case 'audience_disabled': return 'audience';
    case 'resource_disabled': return 'resource';
    case 'scope_not_allowed':
    case 'no_scope_requested': return 'scope';
    case 'step_up_required': return 'step_up';
    default: return 'policy';
  }
}

const PASSED_BEFORE: Record<string, string[]> = { scope: ['policy'], step_up: ['policy', 'scope'] };

const sameSet = (a: string[], b: string[]) => a.length === b.length && a.every((x) => b.includes(x));

/**
 * The RFC 8693 token exchange for an ID-JAG (SPEC.md Step 2), top to bottom as the spec's checks:
 * request → subject token → target → policy → mint → audit → respond. Every outcome, issued or not, is
 * written to the audit log before the response leaves.
 */
export function tokenExchangeHandler(deps: ExchangeDeps) {
  return async function tokenExchange(ctx: KoaContextWithOIDC): Promise<void> {
    const state = exchangeState(ctx);
    state.handled = true;
    const checks: CheckList = new CheckList(REQUEST_CHECKS);
    const at = now();
    const record = recordBase(ctx);
    const stages = stageClock(deps.observe);
    const audit = async (r: Pick<DecisionRecord, 'decision' | 'reason' | 'explanation'> & Partial<DecisionRecord>) => {
      stages.begin('audit');
      await auditDecision(deps, { ...record, ...r, checks: checks.record, durationMs: performance.now() - state.started }, registeredClient(ctx.oidc), state.started);
      state.audited = true;
    };

    let response: Record<string, unknown>;
    try {
      stages.begin('request');
      checks.pass('request_syntax');
      const req = parseRequest(ctx, checks);
      record.warnings = lintRequest(ctx, req);
      checks.plan(subjectChecks(req.subjectTokenType));
      checks.plan(DECISION_CHECKS);
      const keys = deps.keys();
      stages.begin('subject');
      const subject = await validateSubject(req, checks, { db: deps.db, issuer: deps.issuer, keys, provider: ctx.oidc.provider, now: at });
      record.sub = subject.user.sub;
      record.username = subject.user.username;

      stages.begin('target');
      const target = await resolveTarget(deps.db, checks, req.audience, req.resources);
      record.warnings = [...record.warnings, ...lintTarget(req, target)];
      const rules = await loadRules(deps.db, req.clientId, target.resourceServer.id);
      stages.begin('policy');
      const decision = decide({
        client: { id: req.clientId, enabled: true },
        user: { sub: subject.user.sub, enabled: !subject.user.disabled, groups: subject.groups },
        resourceServer: target.resourceServer,
        mcpServers: target.mcpServers,
        ...(req.scopes ? { requestedScopes: req.scopes } : {}),
        ...(subject.authTime !== undefined ? { authTime: subject.authTime } : {}),
        now: at,
      }, rules);
      if (!decision.allow) {
        record.ruleIds = decision.ruleIds;
        const failing = checkFor(decision);
        // the checks the policy engine got past before this denial
        for (const name of PASSED_BEFORE[failing] ?? []) checks.pass(name);
        checks.fail(failing, decision.description, {
          explanation: decision.explanation, reason: decision.reason, error: decision.error,
          ...(decision.maxAge !== undefined ? { maxAge: decision.maxAge } : {}),
        });
      }
      checks.pass('policy', 'allowed', decision.explanation);
      checks.pass('scope', decision.scopes.join(' '));
      checks.pass('step_up');

      stages.begin('mint');
      const claims = idJagClaims(deps.issuer, subject, target.resourceServer.issuer, req.resources, decision);
      const minted = await mintIdJag(activeKey(keys, 'id_jag'), claims, decision.lifetime, at);
      checks.pass('issue', `jti ${minted.jti}, expires ${new Date(minted.exp * 1000).toISOString()}`);
      // The audit row is written before the token leaves; if it cannot be written, the token never does.
      await audit({
        decision: 'issued', reason: 'issued', explanation: decision.explanation,
        scopesGranted: decision.scopes, ruleIds: decision.ruleIds, jti: minted.jti, exp: minted.exp,
      });
      response = {
        access_token: minted.jwt,
        issued_token_type: ID_JAG,
        token_type: 'N_A',
        expires_in: minted.exp - minted.iat,
        ...(req.scopes && sameSet(req.scopes, decision.scopes) ? {} : { scope: decision.scopes.join(' ') }),
      };
    } catch (err) {
      if (err instanceof ExchangeRejection) {
        if (err.maxAge !== undefined) state.maxAge = err.maxAge;
        await auditOrFailClosed(deps.log, () => audit({ decision: 'denied', reason: err.reason, explanation: err.explanation, error: err.error }));
        throw providerError(err.error, describeFailure(deps.errors, err.error, err.check, err.description));
      }
      deps.log.error({ err, reqId: record.requestId }, 'token exchange failed');
      if (!state.audited) {
        await audit({ decision: 'error', reason: 'internal_error', explanation: `the exchange failed: ${(err as Error)?.message ?? String(err)}`, error: 'temporarily_unavailable' })
          .catch((e: unknown) => deps.log.error({ err: e }, 'audit write failed'));
      }
      throw unavailable();
    } finally {
      stages.end();
    }
    ctx.body = response;
  };
}

async function auditOrFailClosed(log: Logger, write: () => Promise<void>) {
  try {
    await write();
  } catch (err) {
    log.error({ err }, 'audit write failed');
    throw unavailable();
  }
}

export function providerError(error: string, description: string): Error {
  const err = new errors.CustomOIDCProviderError(error, description);
  if (error === 'invalid_client') Object.assign(err, { status: 401, statusCode: 401 });
  return err;
}

export const UNRECORDED = 'the IdP could not record this decision and issued nothing; retry shortly';

function unavailable(): Error {
  const err = new errors.CustomOIDCProviderError('temporarily_unavailable', UNRECORDED);
  return Object.assign(err, { status: 503, statusCode: 503 });
}
