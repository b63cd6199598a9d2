import Router from '@koa/router';
import type { Context } from 'koa';
import { findClientRow } from '../db/clients.ts';
import type { DB } from '../db/index.ts';
import type { AuditLogTable } from '../db/schema.ts';
import { decodeChecks, decodeOwnId, decodeResources, decodeTokenType, decodeTypes, rowFacts, decodeWarnings, failedCheck } from '../audit/codec.ts';
import { auditValues } from '../audit/values.ts';
import { describeChecks } from '../exchange/checks.ts';
import type { ClientAuthGate } from '../oidc/client-auth.ts';
import { VerifiedSecretCache, verifyAgainstNothing } from '../oidc/secrets.ts';
import { basicCredentials } from '../web/basic-auth.ts';
import type { Render } from '../web/views.ts';

const verified = new VerifiedSecretCache();
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 200;

export interface ClientViewDeps {
  db: DB;
  render: Render;
  /** the failed-client-authentication throttle the token endpoint uses */
  throttle?: ClientAuthGate;
}

type Refusal = { status: 401 | 429; message: string; retryAfter?: number };

/**
 * Who is asking: the client whose id and secret these are, or why not. Checked like a client secret at the
 * token endpoint: refused before the secret is looked at when the throttle says so, every failure counted,
 * and an unknown client id costs the same scrypt as a wrong secret.
 */
async function authenticate(db: DB, ctx: Context, throttle: ClientAuthGate | undefined): Promise<{ clientId: string } | Refusal> {
  const creds = basicCredentials(ctx.get('authorization'));
  if (!creds || creds.secret === '') return { status: 401, message: 'authenticate with your client id and secret (HTTP Basic, as at the token endpoint)' };
  const verdict = await throttle?.admit(ctx.ip, creds.id);
  if (verdict && !verdict.allowed) return { status: 429, message: verdict.description, retryAfter: verdict.retryAfter };
  const row = await findClientRow(db, creds.id);
  const ok = row && !row.disabled && row.secret_hash ? await verified.verify(creds.secret, row.secret_hash) : await verifyAgainstNothing(creds.secret);
  if (!ok) {
    await throttle?.failed(ctx.ip, creds.id);
    return { status: 401, message: 'client authentication failed (this view accepts clients with a client secret)' };
  }
  return { clientId: creds.id };
}

export interface Attempt {
  id: string;
  at: string;
  decision: string;
  error: string | null;
  failed_check: string | null;
  message: string | null;
  subject_token_type: string | null;
  sub: string | null;
  audience: string | null;
  resources: string[];
  scopes_requested: string | null;
  scopes_granted: string | null;
  /** the RFC 9396 authorization_details types asked for and granted */
  authorization_details_requested: string[] | null;
  authorization_details_granted: string[] | null;
  /** the actor token's type and SHA-256, as the audit log keeps it */
  actor_token_type: string | null;
  actor_token_hash: string | null;
  jti: string | null;
  checks: { name: string; status: string; section: string; message?: string }[];
  warnings: { code: string; message: string; section: string }[];
}

const ATTEMPT_COLUMNS = ['id', 'at', 'decision', 'error', 'subject_token_type', 'sub', 'audience', 'resources', 'scopes_requested', 'scopes_granted',
  'details_requested', 'details_granted', 'actor_token_type', 'actor_token_hash', 'jti', 'checks', 'warnings',
  // read only to fill in what the stored checks left to them (the admin's explanation is not shown)
  'username', 'explanation', 'exp', 'rule_id'] as const;
type AttemptRow = Pick<AuditLogTable, (typeof ATTEMPT_COLUMNS)[number]>;

/**
 * What a client may see of its own attempts: the checks and their client-facing messages, the warnings.
 * Not the admin's explanations, rule ids or anything else that would disclose policy (draft §9.4).
 */
function toAttempt(row: AttemptRow, values: ReadonlyMap<number, string>): Attempt {
  const checks = describeChecks(decodeChecks(row.checks, rowFacts(row, values))).map((c) => ({
    name: c.name, status: c.status, section: c.section ?? '', ...(c.message === undefined ? {} : { message: c.message }),
  }));
  const failedName = failedCheck(checks);
  const failed = checks.find((c) => c.name === failedName);
  return {
    id: row.id,
    at: new Date(row.at).toISOString(),
    decision: row.decision,
    error: row.error,
    failed_check: failed?.name ?? null,
    message: failed?.message ?? null,
    subject_token_type: decodeTokenType(row.subject_token_type),
    sub: row.sub,
    audience: row.audience,
    resources: decodeResources(row.resources),
    scopes_requested: row.scopes_requested,
    scopes_granted: row.scopes_granted,
    authorization_details_requested: decodeTypes(row.details_requested),
    authorization_details_granted: decodeTypes(row.details_granted),
    actor_token_type: decodeTokenType(row.actor_token_type),
    actor_token_hash: row.actor_token_hash,
    jti: decodeOwnId(row.jti, row.id),
    checks,
    warnings: decodeWarnings(row.warnings),
  };
}

export async function recentAttempts(db: DB, clientId: string, limit = DEFAULT_LIMIT): Promise<Attempt[]> {
  const rows = await db.selectFrom('audit_log')
    .select(ATTEMPT_COLUMNS)
    .where('client_id', '=', clientId).orderBy('at', 'desc').orderBy('id', 'desc').limit(limit).execute();
  const values = await auditValues(db);
  return rows.map((row) => toAttempt(row, values));
}

const wantsJson = (ctx: Context) => ctx.query.format === 'json' || ctx.accepts('html', 'json') === 'json';

/**
 * `GET /conformance/clients/{client_id}`: a client author sees their own client's recent token-exchange
 * attempts, each with its check list and warnings, authenticated with that client's own credentials.
 */
export function clientViewRoutes(deps: ClientViewDeps): Router {
  const router = new Router({ prefix: '/conformance/clients' });
  router.get('/:clientId', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    const who = await authenticate(deps.db, ctx, deps.throttle);
    if ('status' in who) {
      ctx.status = who.status;
      if (who.retryAfter !== undefined) {
        ctx.set('Retry-After', String(who.retryAfter));
        ctx.body = { error: 'temporarily_unavailable', error_description: who.message };
        return;
      }
      ctx.set('WWW-Authenticate', 'Basic realm="idjag conformance", charset="UTF-8"');
      ctx.body = { error: 'invalid_client', error_description: who.message };
      return;
    }
    if (who.clientId !== ctx.params.clientId) {
      ctx.status = 403;
      ctx.body = { error: 'access_denied', error_description: `these credentials are client ${who.clientId}'s; a client sees only its own attempts` };
      return;
    }
    const requested = Number(ctx.query.limit ?? DEFAULT_LIMIT);
    const limit = Number.isInteger(requested) && requested > 0 ? Math.min(requested, MAX_LIMIT) : DEFAULT_LIMIT;
    const attempts = await recentAttempts(deps.db, who.clientId, limit);
    if (wantsJson(ctx)) {
      ctx.body = { client_id: who.clientId, attempts };
      return;
    }
    ctx.type = 'html';
    ctx.body = deps.render('conformance-client', { title: `Token exchanges of ${who.clientId}`, wide: true, clientId: who.clientId, attempts });
  });
  return router;
}
