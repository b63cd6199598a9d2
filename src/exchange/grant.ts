import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import { uuidv7, type DecisionRecord } from '../audit/index.ts';
import { readCounters, type Counters } from '../db/counters.ts';
import { firstUseOfProof } from '../db/dpop-proofs.ts';
import { now, type DB } from '../db/index.ts';
import { activeKey, type KeySet } from '../oidc/keys.ts';
import { OAuthError } from '../web/errors.ts';
import { exchangeState, takeAuditId } from '../web/state.ts';
import { basicCredentials } from '../web/basic-auth.ts';
import { describeFailure, type ErrorDetail } from './checks.ts';
import { signingMinter } from './mint.ts';
import { auditDecision, registeredClient, stageClock, type ExchangeObserver } from './observe.ts';
import { runExchange, type Outcome } from './pipeline.ts';
import { databasePorts } from './ports.ts';
import { LookupCache } from './lookup-cache.ts';
import { takeCounters } from './read-ahead.ts';
import { headerProof, type DpopNonces, type ProofReplays } from './proof.ts';
import { ID_JAG, PARAMETERS, REPEATABLE, requestFacts, TOKEN_EXCHANGE, type ExchangeInput, type Params } from './request.ts';
import { tokenSubjects } from './subject.ts';

/**
 * The token exchange as a grant of the provider: request → input → runExchange → audit row → RFC 8693
 * response or OAuth error. Registered with its parameter set, like the provider's own grants.
 */

export const grantType = TOKEN_EXCHANGE;
export const parameters = new Set<string>(PARAMETERS);
export const dupes = new Set<string>(REPEATABLE);

export interface ExchangeDeps {
  db: DB;
  issuer: string;
  /** this IdP's tenant, carried by every ID-JAG as `tenant` when set */
  tenant?: string | undefined;
  log: Logger;
  /** how much error_description says (verbose in development, minimal in production) */
  errors: ErrorDetail;
  keys: () => KeySet;
  /** measurements (src/metrics): how long each stage took, and each decision as its audit row is written */
  observe?: ExchangeObserver | undefined;
  /** server-provided DPoP nonces (RFC 9449 §8), when configured: every proof must then carry a recent one */
  dpopNonces?: DpopNonces | undefined;
}

export type RecordBase = Omit<DecisionRecord, 'decision' | 'reason' | 'explanation' | 'checks'>;

/** What every audit row of a token-exchange request says about the request, whatever its outcome. */
export function recordBase(ctx: KoaContextWithOIDC): RecordBase {
  const params = (ctx.oidc?.params ?? {}) as Params;
  const clientId = ctx.oidc?.client?.clientId ?? (typeof params.client_id === 'string' ? params.client_id : undefined) ?? basicCredentials(ctx.get('authorization'))?.id;
  const facts = requestFacts(params, clientId);
  return {
    id: takeAuditId(ctx, uuidv7),
    requestId: ctx.state.requestId ?? '',
    clientId: facts.clientId,
    subjectTokenType: facts.subjectTokenType,
    audience: facts.audience,
    resources: facts.resources,
    scopesRequested: facts.scopes,
    ip: ctx.ip,
    userAgent: ctx.get('user-agent') || undefined,
    actorTokenType: facts.actorTokenType,
    actorTokenHash: facts.actorTokenHash,
  };
}

/** The pipeline's input from a token request the provider has authenticated and parsed. */
function inputOf(ctx: KoaContextWithOIDC): ExchangeInput {
  const client = ctx.oidc.client!;
  return {
    client: {
      id: client.clientId, authMethod: client.clientAuthMethod ?? 'none', grantTypes: client.grantTypes ?? [], enabled: true,
      dpopBound: client.dpopBoundAccessTokens === true,
    },
    params: ctx.oidc.params as Params,
    credentialsInBody: ctx.oidc.params?.client_secret !== undefined && ctx.get('authorization') === '',
  };
}

export const UNRECORDED = 'the IdP could not record this decision and issued nothing; retry shortly';
const unavailable = () => new OAuthError('temporarily_unavailable', UNRECORDED, 503);

/**
 * RFC 8693 §2.2.1: the ID-JAG in `access_token`, `scope` only when it differs from the request; RFC 9396 §7:
 * the authorization_details granted, whenever some were requested.
 */
function issuedResponse(outcome: Extract<Outcome, { kind: 'issued' }>): Record<string, unknown> {
  const { request, decision, minted, claims } = outcome;
  const same = request.scopes !== undefined && request.scopes.length === decision.scopes.length && request.scopes.every((s) => decision.scopes.includes(s));
  return {
    access_token: minted.jwt,
    issued_token_type: ID_JAG,
    token_type: 'N_A',
    expires_in: minted.exp - minted.iat,
    ...(same ? {} : { scope: decision.scopes.join(' ') }),
    ...(claims.authorization_details ? { authorization_details: claims.authorization_details } : {}),
  };
}

/** The token endpoint, as discovery names it: a proof's `htu` must name it so (RFC 9449 §4.3 item 9). */
export const tokenEndpointOf = (issuer: string): string => `${issuer}/token`;

export function tokenExchangeHandler(deps: ExchangeDeps) {
  const stores = databasePorts(deps.db);
  const cache = new LookupCache();
  const replays: ProofReplays = { firstUse: (key, keepUntil) => firstUseOfProof(deps.db, key, keepUntil, now()) };
  const htu = tokenEndpointOf(deps.issuer);
  return async function tokenExchange(ctx: KoaContextWithOIDC): Promise<void> {
    const state = exchangeState(ctx);
    state.handled = true;
    const keys = deps.keys();
    const base = recordBase(ctx);
    const stages = stageClock(deps.observe);
    // read with the client by the provider's adapter; on their own only if that read did not bring them
    let counters: Counters | undefined = takeCounters(ctx);
    const result = await runExchange(inputOf(ctx), {
      ...stores,
      lookup: async (q) => {
        counters ??= await readCounters(deps.db);
        return cache.lookup(q, counters, stores.reads);
      },
      subjects: tokenSubjects({ issuer: deps.issuer, keys, provider: ctx.oidc.provider }),
      minter: signingMinter(() => activeKey(keys, 'id_jag'), base.id),
      proofs: headerProof({ headers: ctx.req.headersDistinct.dpop, htu, replays, nonces: deps.dpopNonces }),
      issuer: deps.issuer,
      tenant: deps.tenant,
      clock: now,
      stage: (name) => (name === 'end' ? stages.end() : stages.begin(name)),
    });
    const { outcome } = result;
    if (outcome.kind === 'failed') deps.log.error({ err: outcome.error, reqId: ctx.state.requestId }, 'token exchange failed');
    // The audit row is written before the response; if it cannot be written, no token and no decision leave.
    stages.begin('audit');
    try {
      await auditDecision(deps, { ...base, ...result.record, durationMs: performance.now() - state.started }, registeredClient(ctx.oidc), state.started);
      state.audited = true;
    } catch (err) {
      deps.log.error({ err }, 'audit write failed');
      throw unavailable();
    } finally {
      stages.end();
    }
    if (outcome.kind === 'failed') throw unavailable();
    // RFC 9449 §8: with nonces, every answer hands out a fresh one (a use_dpop_nonce refusal must)
    if (deps.dpopNonces) ctx.set('DPoP-Nonce', deps.dpopNonces.current(now()));
    if (outcome.kind === 'denied') {
      const r = outcome.rejection;
      if (r.maxAge !== undefined) state.maxAge = r.maxAge;
      throw new OAuthError(r.error, describeFailure(deps.errors, r.error, r.check, r.description), r.error === 'invalid_client' ? 401 : 400);
    }
    ctx.body = issuedResponse(outcome);
  };
}
