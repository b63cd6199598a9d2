import { randomBytes } from 'node:crypto';
import type { DB, Schema } from '../db/index.ts';
import { prepared } from '../db/prepared.ts';
import type { AuditDecision, AuditLogTable } from '../db/schema.ts';
import { encodeChecks, encodeResources, encodeRuleIds, encodeTokenType, encodeTypes, encodeWarnings, text, type CheckRecord, type WarningRecord } from './codec.ts';

export * from './codec.ts';

/**
 * UUIDv7 (RFC 9562 §5.7): 48 bits of milliseconds, then random bits. Ids sort by time, so (at, id) is a
 * keyset for pagination on any database, with no sequence to share between nodes.
 */
export function uuidv7(ms = Date.now()): string {
  const b = randomBytes(16);
  b.writeUIntBE(ms, 0, 6);
  b[6] = (b[6]! & 0x0f) | 0x70;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export interface DecisionRecord {
  requestId: string;
  decision: AuditDecision;
  reason: string;
  explanation: string;
  error?: string | undefined;
  clientId?: string | undefined;
  sub?: string | undefined;
  username?: string | undefined;
  audience?: string | undefined;
  resources?: string[] | undefined;
  scopesRequested?: string[] | undefined;
  scopesGranted?: string[] | undefined;
  ruleIds?: string[] | undefined;
  jti?: string | undefined;
  exp?: number | undefined;
  subjectTokenType?: string | undefined;
  ip?: string | undefined;
  userAgent?: string | undefined;
  durationMs?: number | undefined;
  checks: readonly CheckRecord[];
  warnings?: readonly WarningRecord[] | undefined;
  /** the RFC 9396 authorization_details types requested, and those granted */
  detailsRequested?: string[] | undefined;
  detailsGranted?: string[] | undefined;
  /** the RFC 8693 actor token's type and hash (never the token) */
  actorTokenType?: string | undefined;
  actorTokenHash?: string | undefined;
}

// Every column, checked by the compiler against the table type: a new column cannot be forgotten here.
const AUDIT_COLUMNS = Object.keys({
  id: 1, at: 1, request_id: 1, decision: 1, reason: 1, explanation: 1, error: 1, client_id: 1, sub: 1, username: 1,
  audience: 1, resources: 1, scopes_requested: 1, scopes_granted: 1, rule_id: 1, jti: 1, exp: 1, subject_token_type: 1,
  ip: 1, user_agent: 1, duration_ms: 1, checks: 1, warnings: 1, details_requested: 1, details_granted: 1, actor_token_type: 1, actor_token_hash: 1,
} satisfies Record<keyof AuditLogTable, 1>);
// Written once per token exchange: prepared once.
const insertDecision = prepared<Schema, AuditLogTable, never>((db, p) =>
  db.insertInto('audit_log').values(Object.fromEntries(AUDIT_COLUMNS.map((c) => [c, p(c)])) as unknown as AuditLogTable));

/**
 * Appends one decision to the audit log: every row, issued, denied or failed, whoever refused the request
 * (the grant, the provider before it, a rate limit), is written here. Request-supplied strings are stored
 * bounded (codec.ts); tokens are never passed in here.
 */
export async function recordOutcome(db: DB, r: DecisionRecord, at = Date.now()): Promise<string> {
  const id = uuidv7(at);
  const row: AuditLogTable = {
    id,
    at,
    request_id: r.requestId,
    decision: r.decision,
    reason: r.reason,
    explanation: r.explanation.slice(0, 4096),
    error: r.error ?? null,
    client_id: text(r.clientId, 255),
    sub: text(r.sub, 255),
    username: text(r.username, 255),
    audience: text(r.audience),
    resources: encodeResources(r.resources),
    scopes_requested: r.scopesRequested?.length ? r.scopesRequested.join(' ').slice(0, 2048) : null,
    scopes_granted: r.scopesGranted?.length ? r.scopesGranted.join(' ') : null,
    rule_id: encodeRuleIds(r.ruleIds),
    jti: r.jti ?? null,
    exp: r.exp ?? null,
    subject_token_type: encodeTokenType(r.subjectTokenType),
    ip: text(r.ip, 64),
    user_agent: text(r.userAgent, 512),
    duration_ms: r.durationMs === undefined ? null : Math.round(r.durationMs * 1000) / 1000,
    checks: '',
    warnings: encodeWarnings(r.warnings),
    details_requested: encodeTypes(r.detailsRequested),
    details_granted: encodeTypes(r.detailsGranted),
    actor_token_type: encodeTokenType(r.actorTokenType),
    actor_token_hash: r.actorTokenHash ?? null,
  };
  // after the columns it may refer to, as they are stored (bounded)
  row.checks = encodeChecks(r.checks, row);
  await insertDecision(db, row);
  return id;
}
