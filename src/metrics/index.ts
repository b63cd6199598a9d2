import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Database } from '../db/index.ts';
import { CHECKS_BY_NAME } from '../exchange/checks.ts';
import { OBSERVED_STAGES, type ExchangeObserver } from '../exchange/index.ts';
import type { SignInObserver } from '../oidc/interactions.ts';
import { DENY_REASONS } from '../policy/index.ts';
import { LIMITERS, type RateLimitObserver } from '../throttle/index.ts';

/**
 * Prometheus metrics (prom-client) at `GET /metrics`, in the text exposition format. Each idjag instance has a
 * registry of its own (tests run several servers in one process). Every label has a closed set of values:
 * decisions, outcomes, stages and limiters are fixed lists; `reason` is a check name, a policy reason or a
 * fixed word (anything else would be `other`); `client_id` is a client the provider found in the clients
 * table, or `none`. No user ids, no free text.
 */

export const METRICS_PATH = '/metrics';

const DECISIONS = ['issued', 'denied', 'error'] as const;
/** Every reason an audit row of a token exchange can carry. */
const EXCHANGE_REASONS: ReadonlySet<string> = new Set(['issued', 'internal_error', 'user_unknown', 'user_disabled', 'client_disabled', 'audience_disabled', 'resource_disabled', 'dpop_nonce', 'dpop_replay', ...CHECKS_BY_NAME.keys(), ...DENY_REASONS]);
const SIGN_IN_REASONS: Record<string, readonly string[]> = {
  succeeded: ['none'],
  failed: ['unknown_user', 'wrong_password', 'disabled'],
  throttled: ['account', 'ip'],
};
const SIGN_IN_REASON_SETS = new Map(Object.entries(SIGN_IN_REASONS).map(([outcome, reasons]) => [outcome, new Set(reasons)]));
const AUDIT_LOGS = ['token_exchange', 'sign_in'] as const;

const bounded = (value: string | undefined, allowed: { has(v: string): boolean }, absent = 'none') =>
  (value === undefined ? absent : allowed.has(value) ? value : 'other');

export interface MetricsOptions {
  database: Database;
  /** when set, scrapes must send `Authorization: Bearer <token>` */
  token?: string | undefined;
  /** as a worker of several: what a scrape answers instead of this process's own metrics (every worker's, summed) */
  aggregate?: ((registry: Registry) => () => Promise<string>) | undefined;
}

export interface Metrics {
  registry: Registry;
  /** for the token exchange (src/exchange): stage timings, decisions, audit failures */
  exchange: ExchangeObserver;
  /** for the login form (src/oidc/interactions.ts): sign-ins by outcome, audit failures */
  signIns: SignInObserver;
  /** for the throttles (src/web/rate-limits.ts): refusals by limit */
  rateLimits: RateLimitObserver;
  /** serves GET /metrics; every other request passes */
  middleware: (ctx: Context, next: Next) => Promise<unknown>;
}

export function createMetrics(options: MetricsOptions): Metrics {
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry });

  const exchanges = new Counter({
    name: 'idjag_token_exchanges_total',
    help: 'Token exchanges for ID-JAGs, counted as their audit row is written: by decision, reason (the failed check or policy reason; "issued" when issued) and client (a registered client, or "none")',
    labelNames: ['decision', 'reason', 'client_id'] as const,
    registers,
  });
  const exchangeSeconds = new Histogram({
    name: 'idjag_token_exchange_duration_seconds',
    help: 'Token exchange latency, from the request at the token endpoint to its audit row written, by decision',
    labelNames: ['decision'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const stageSeconds = new Histogram({
    name: 'idjag_token_exchange_stage_duration_seconds',
    help: 'Time spent in each stage of the token-exchange grant (request, subject, target, policy, mint, audit), passed or refused',
    labelNames: ['stage'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers,
  });
  const refusals = new Counter({
    name: 'idjag_rate_limit_refusals_total',
    help: 'Requests refused by a rate limit: login_account, login_ip (sign-in), token_client, token_public (token endpoint), client_auth_ip, client_auth_client (failed client authentications)',
    labelNames: ['limiter'] as const,
    registers,
  });
  const signIns = new Counter({
    name: 'idjag_sign_ins_total',
    help: 'Sign-in attempts at the login form, counted as their login_events row is written: by outcome (succeeded, failed, throttled) and reason',
    labelNames: ['outcome', 'reason'] as const,
    registers,
  });
  const auditFailures = new Counter({
    name: 'idjag_audit_write_failures_total',
    help: 'Audit rows that could not be written: token_exchange (audit_log; nothing was issued) or sign_in (login_events; the attempt failed)',
    labelNames: ['log'] as const,
    registers,
  });

  // Every series of a closed label set exists from the start, at 0: an alert on a rate sees its first event.
  for (const decision of DECISIONS) exchangeSeconds.zero({ decision });
  for (const stage of OBSERVED_STAGES) stageSeconds.zero({ stage });
  for (const limiter of LIMITERS) refusals.inc({ limiter }, 0);
  for (const [outcome, reasons] of Object.entries(SIGN_IN_REASONS)) for (const reason of reasons) signIns.inc({ outcome, reason }, 0);
  for (const log of AUDIT_LOGS) auditFailures.inc({ log }, 0);

  if (options.database.dialect === 'postgres') poolGauges(options.database.pool, registers);

  const exchange: ExchangeObserver = {
    observeStage: (stage, seconds) => stageSeconds.observe({ stage }, seconds),
    observeDecision: (d) => {
      exchanges.inc({ decision: d.decision, reason: bounded(d.reason, EXCHANGE_REASONS), client_id: d.clientId ?? 'none' });
      exchangeSeconds.observe({ decision: d.decision }, d.seconds);
    },
    observeAuditFailure: () => auditFailures.inc({ log: 'token_exchange' }),
  };
  const signInObserver: SignInObserver = {
    observeSignIn: (event, reason) => signIns.inc({ outcome: event, reason: bounded(reason, SIGN_IN_REASON_SETS.get(event) ?? new Set()) }),
    observeAuditFailure: () => auditFailures.inc({ log: 'sign_in' }),
  };
  const rateLimits: RateLimitObserver = { observeRefusal: (limiter) => refusals.inc({ limiter }) };

  const text = options.aggregate?.(registry) ?? (() => registry.metrics());
  return { registry, exchange, signIns: signInObserver, rateLimits, middleware: metricsEndpoint(registry.contentType, text, options.token) };
}

/** The PostgreSQL pool (pg) as it is at each scrape. */
function poolGauges(pool: Extract<Database, { dialect: 'postgres' }>['pool'], registers: Registry[]) {
  new Gauge({
    name: 'idjag_db_pool_connections',
    help: 'PostgreSQL connections of this node\'s pool, by state (active: checked out by a query, idle: open and free)',
    labelNames: ['state'] as const,
    registers,
    collect() {
      this.set({ state: 'active' }, pool.totalCount - pool.idleCount);
      this.set({ state: 'idle' }, pool.idleCount);
    },
  });
  new Gauge({
    name: 'idjag_db_pool_max_connections',
    help: 'The most connections this node\'s pool opens',
    registers,
    collect() {
      this.set(pool.options.max ?? 10);
    },
  });
  new Gauge({
    name: 'idjag_db_pool_waiting_queries',
    help: 'Queries waiting for a connection of this node\'s pool (the pool is exhausted while this is above 0)',
    registers,
    collect() {
      this.set(pool.waitingCount);
    },
  });
}

const digest = (value: string) => createHash('sha256').update(value).digest();

/** Constant-time comparison of the presented bearer token with the configured one. */
function bearerMatches(header: string, token: string): boolean {
  const m = /^Bearer +([\x21-\x7e]+) *$/i.exec(header);
  return m !== null && timingSafeEqual(digest(m[1]!), digest(token));
}

function metricsEndpoint(contentType: string, text: () => Promise<string>, token: string | undefined) {
  return async (ctx: Context, next: Next) => {
    if (ctx.path !== METRICS_PATH) return next();
    ctx.set('Cache-Control', 'no-store');
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      ctx.status = 405;
      ctx.set('Allow', 'GET, HEAD');
      ctx.body = { error: 'invalid_request', error_description: 'the metrics are read with GET' };
      return;
    }
    if (token !== undefined && !bearerMatches(ctx.get('authorization'), token)) {
      ctx.status = 401;
      ctx.set('WWW-Authenticate', ctx.get('authorization') ? 'Bearer realm="idjag metrics", error="invalid_token"' : 'Bearer realm="idjag metrics"');
      ctx.body = { error: 'invalid_token', error_description: 'the metrics require Authorization: Bearer with the configured metrics token (IDJAG_METRICS_TOKEN)' };
      return;
    }
    ctx.type = contentType;
    ctx.body = await text();
  };
}
