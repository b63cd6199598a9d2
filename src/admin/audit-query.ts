import { sql } from 'kysely';
import { z } from 'zod';
import { decodeChecks, decodeExplanation, decodeResources, decodeRuleIds, decodeTokenType, decodeTypes, rowFacts, encodeResources, failedCheck, RESOURCES_INDEXED_MAX, withOwnIds } from '../audit/codec.ts';
import { auditValues } from '../audit/values.ts';
import type { DB } from '../db/index.ts';
import { subsOf } from '../db/users.ts';
import type { AuditDecision, AuditLogTable } from '../db/schema.ts';
import { describeChecks } from '../exchange/checks.ts';
import { decodeCursor, encodeCursor } from './changes.ts';
import { invalid, NotFound } from './errors.ts';
import { findRule, type RuleView } from './rules.ts';

/**
 * Reading the token-exchange audit log: filtered, newest first, in keyset pages on (at, id) so a page deep
 * in a million rows costs what the first one does; one entry with its whole explanation; and exports that
 * stream the filtered set page by page.
 *
 * Every filter is an equality on the leading column of an index ending in (at, id) (see migrations 0002
 * and 0005), so a page is one index range read, whichever single filter is set; combined filters read one of
 * those ranges and test the others row by row.
 */

/** A time: epoch milliseconds, or an ISO 8601 date-time. */
export const Time = z.union([
  z.number().int().min(0),
  z.string().regex(/^\d{1,15}$/).transform(Number),
  z.iso.datetime({ offset: true }).transform((s) => Date.parse(s)),
  z.iso.date().transform((s) => Date.parse(s)),
]);

export const AuditFilter = z.strictObject({
  /** inclusive */
  from: Time.optional(),
  /** exclusive */
  to: Time.optional(),
  decision: z.enum(['issued', 'denied', 'error']).optional(),
  client_id: z.string().min(1).max(255).optional(),
  /** a username (resolved to the user's sub) or a sub */
  user: z.string().min(1).max(255).optional(),
  /** an MCP server's resource identifier: requests that named it as their one resource */
  resource: z.string().min(1).max(2048).optional(),
  reason: z.string().min(1).max(100).optional(),
});
export type AuditFilter = z.infer<typeof AuditFilter>;

export const AuditPage = AuditFilter.extend({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().max(200).optional(),
});
export type AuditPage = z.infer<typeof AuditPage>;

export const AuditExport = AuditFilter.extend({
  format: z.enum(['csv', 'jsonl']),
});

export interface AuditSummary {
  id: string;
  at: string;
  decision: AuditDecision;
  reason: string;
  error: string | null;
  client_id: string | null;
  sub: string | null;
  username: string | null;
  audience: string | null;
  resources: string[] | null;
  scopes_requested: string | null;
  scopes_granted: string | null;
  rule_ids: string[];
  explanation: string;
}

export interface AuditCheck {
  name: string;
  status: 'passed' | 'failed' | 'not_reached';
  /** what the client was told */
  message?: string;
  /** what only the admin sees, when it says more (rule ids, groups) */
  explanation?: string;
  /** where the check comes from (the draft or RFC section) */
  section?: string;
  /** what a failure of it answers */
  error?: string;
}

export interface AuditEntry extends AuditSummary {
  request_id: string;
  jti: string | null;
  exp: string | null;
  subject_token_type: string | null;
  ip: string | null;
  user_agent: string | null;
  duration_ms: number | null;
  /** the RFC 9396 authorization_details types requested and granted (null: none requested, or none granted) */
  details_requested: string[] | null;
  details_granted: string[] | null;
  /** the RFC 8693 actor token's type and SHA-256 (base64url), when the request carried one */
  actor_token_type: string | null;
  actor_token_hash: string | null;
  checks: AuditCheck[];
  /** the rules the decision named (the one that matched, for an issued token), as they are now; null when deleted since */
  rules: { id: string; rule: RuleView | null }[];
}

const SUMMARY_COLUMNS = ['id', 'at', 'decision', 'reason', 'error', 'client_id', 'sub', 'username', 'audience', 'resources',
  'scopes_requested', 'scopes_granted', 'rule_id', 'explanation'] as const;

/** The `resources` column exactly as the audit log writes it for a one-resource request. */
const oneResource = (resource: string) => encodeResources([resource])!;

/** A username becomes the user's sub (the indexed column); anything else is taken as a sub. */
async function subFor(db: DB, user: string): Promise<string> {
  return (await subsOf(db, [user]))[0]?.sub ?? user;
}

/**
 * The page query, built but not run: the API runs it, and the index test runs EXPLAIN QUERY PLAN on it.
 * Newest first; `after` is the last row of the previous page.
 */
export async function auditQuery(db: DB, f: AuditFilter, after?: { at: number; id: string }) {
  let q = db.selectFrom('audit_log');
  if (f.decision !== undefined) {
    q = q.where('decision', '=', f.decision);
    // an issued row's reason is `issued` (the reason index finds those); the decision index holds the others
    // only, and the query names its condition word for word so either planner may use it (migration 0012)
    q = f.decision === 'issued' ? q.where('reason', '=', 'issued') : q.where(sql<boolean>`${sql.ref('decision')} <> ${sql.lit('issued')}`);
  }
  if (f.client_id !== undefined) q = q.where('client_id', '=', f.client_id);
  if (f.user !== undefined) q = q.where('sub', '=', await subFor(db, f.user));
  if (f.resource !== undefined) {
    const resources = oneResource(f.resource);
    q = q.where('resources', '=', resources);
    // the partial index's own condition, word for word, so the planner may use it (longer values are not in it)
    if (resources.length <= RESOURCES_INDEXED_MAX) q = q.where(sql<boolean>`length(${sql.ref('resources')}) <= ${sql.lit(RESOURCES_INDEXED_MAX)}`);
  }
  if (f.reason !== undefined) q = q.where('reason', '=', f.reason);
  if (f.from !== undefined) q = q.where('at', '>=', f.from);
  // One upper bound, the tighter of `to` and the cursor: with both, SQLite would seek on `to` and walk every
  // row down to the cursor, so a deep page in a time range would cost its depth.
  // The cursor's condition, (at, id) < (after.at, after.id), spelled with `at <= after.at` on its own: the
  // indexes hold (filter, at), and both planners seek on that term where they would scan for the row value.
  if (after && (f.to === undefined || after.at < f.to)) {
    q = q.where('at', '<=', after.at).where((eb) => eb.or([eb('at', '<', after.at), eb('id', '<', after.id)]));
  }
  else if (f.to !== undefined) q = q.where('at', '<', f.to);
  return q.orderBy('at', 'desc').orderBy('id', 'desc');
}

const list = (stored: string | null): string[] | null => (stored === null ? null : decodeResources(stored));

function toSummary(r: Pick<AuditLogTable, (typeof SUMMARY_COLUMNS)[number]>): AuditSummary {
  return {
    id: r.id,
    at: new Date(r.at).toISOString(),
    decision: r.decision,
    reason: r.reason,
    error: r.error,
    client_id: r.client_id,
    sub: r.sub,
    username: r.username,
    audience: r.audience,
    resources: list(r.resources),
    scopes_requested: r.scopes_requested,
    scopes_granted: r.scopes_granted,
    rule_ids: decodeRuleIds(r.rule_id),
    explanation: decodeExplanation(r),
  };
}

/** Exactly the query one page runs (one row more than the page, to know whether another follows). */
export async function auditPageQuery(db: DB, p: AuditPage) {
  const after = p.cursor === undefined ? undefined : decodeCursor(p.cursor);
  return (await auditQuery(db, p, after)).select(SUMMARY_COLUMNS).limit(p.limit + 1);
}

export async function searchAudit(db: DB, p: AuditPage): Promise<{ items: AuditSummary[]; next_cursor: string | null }> {
  const rows = await (await auditPageQuery(db, p)).execute();
  const page = rows.slice(0, p.limit);
  const last = page.at(-1);
  return { items: page.map(toSummary), next_cursor: rows.length > p.limit && last ? encodeCursor(last.at, last.id) : null };
}

const expandChecks = (r: AuditLogTable, values: ReadonlyMap<number, string>): AuditCheck[] => describeChecks(decodeChecks(r.checks, rowFacts(r, values)));

/** One decision with everything it recorded: each check (passed, failed, not reached) and the rules it named. */
export async function getAuditEntry(db: DB, id: string): Promise<AuditEntry> {
  if (!/^[0-9a-f-]{36}$/.test(id)) throw invalid(['id'], 'not an audit entry id');
  const stored = await db.selectFrom('audit_log').selectAll().where('id', '=', id).executeTakeFirst();
  if (!stored) throw new NotFound('audit entry', id);
  const r = withOwnIds(stored);
  const summary = toSummary(r);
  return {
    ...summary,
    request_id: r.request_id,
    jti: r.jti,
    exp: r.exp === null ? null : new Date(r.exp * 1000).toISOString(),
    subject_token_type: decodeTokenType(r.subject_token_type),
    ip: r.ip,
    user_agent: r.user_agent,
    duration_ms: r.duration_ms,
    details_requested: decodeTypes(r.details_requested),
    details_granted: decodeTypes(r.details_granted),
    actor_token_type: decodeTokenType(r.actor_token_type),
    actor_token_hash: r.actor_token_hash,
    checks: expandChecks(r, await auditValues(db)),
    rules: await Promise.all(summary.rule_ids.map(async (ruleId) => ({ id: ruleId, rule: (await findRule(db, ruleId)) ?? null }))),
  };
}

const EXPORT_PAGE = 1000;

/**
 * Every row of the filtered set, newest first, one keyset page at a time, as they read (their own ids restored),
 * with the interned values as of that page. Not a single streaming cursor: with one SQLite connection, an
 * open cursor would hold it for as long as the slowest download, and every token exchange (which writes an
 * audit row) would wait; between pages the connection is free.
 */
export async function* auditPages(db: DB, f: AuditFilter, pageSize = EXPORT_PAGE): AsyncGenerator<{ rows: AuditLogTable[]; values: ReadonlyMap<number, string> }> {
  let after: { at: number; id: string } | undefined;
  for (;;) {
    const rows = await (await auditQuery(db, f, after)).selectAll().limit(pageSize).execute();
    if (rows.length) yield { rows: rows.map(withOwnIds), values: await auditValues(db) };
    const last = rows.at(-1);
    if (rows.length < pageSize || !last) return;
    after = { at: last.at, id: last.id };
  }
}

export const CSV_COLUMNS = ['id', 'time', 'decision', 'reason', 'error', 'client_id', 'sub', 'username', 'audience', 'resources',
  'scopes_requested', 'scopes_granted', 'rule_ids', 'failed_check', 'jti', 'subject_token_type', 'ip', 'user_agent', 'duration_ms', 'explanation'] as const;

/**
 * RFC 4180 quoting, and cells that a spreadsheet would run as a formula (= + - @, tab, CR first) prefixed
 * with a quote: audit cells hold request-supplied text (user agents, scopes, audiences).
 */
export function csvCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  let s = String(value);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** One row of the export, as auditPages gives it. */
export function csvLine(r: AuditLogTable, values: ReadonlyMap<number, string>): string {
  const { at: time, resources, rule_ids: ruleIds, ...summary } = toSummary(r);
  const cells: Record<(typeof CSV_COLUMNS)[number], unknown> = {
    ...summary,
    time,
    resources: resources?.join(' '),
    rule_ids: ruleIds.join(' '),
    failed_check: failedCheck(decodeChecks(r.checks, rowFacts(r, values))),
    jti: r.jti,
    subject_token_type: decodeTokenType(r.subject_token_type),
    ip: r.ip,
    user_agent: r.user_agent,
    duration_ms: r.duration_ms,
  };
  return `${CSV_COLUMNS.map((c) => csvCell(cells[c])).join(',')}\r\n`;
}

export function jsonLine(r: AuditLogTable, values: ReadonlyMap<number, string>): string {
  return `${JSON.stringify({
    ...r,
    time: new Date(r.at).toISOString(),
    explanation: decodeExplanation(r),
    subject_token_type: decodeTokenType(r.subject_token_type),
    actor_token_type: decodeTokenType(r.actor_token_type),
    resources: list(r.resources),
    rule_ids: decodeRuleIds(r.rule_id),
    checks: decodeChecks(r.checks, rowFacts(r, values)),
    details_requested: decodeTypes(r.details_requested),
    details_granted: decodeTypes(r.details_granted),
  })}\n`;
}

/** The export as text chunks (one per page), for a streamed HTTP body. */
export async function* exportAudit(db: DB, f: AuditFilter, format: 'csv' | 'jsonl'): AsyncGenerator<string> {
  if (format === 'csv') yield `${CSV_COLUMNS.join(',')}\r\n`;
  for await (const { rows, values } of auditPages(db, f)) {
    yield rows.map((row) => (format === 'csv' ? csvLine(row, values) : jsonLine(row, values))).join('');
  }
}
