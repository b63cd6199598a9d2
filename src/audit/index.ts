import { randomBytes } from 'node:crypto';
import { immediateTransaction } from '../db/immediate.ts';
import { onPostgres, type DB, type Schema } from '../db/index.ts';
import { prepared } from '../db/prepared.ts';
import type { AuditDecision, AuditLogTable } from '../db/schema.ts';
import { encodeChecks, encodeExplanation, encodeOwnId, encodeResources, encodeRuleIds, encodeTokenType, encodeTypes, encodeWarnings, internable, text, type CheckRecord, type WarningRecord } from './codec.ts';
import { internValues } from './values.ts';

export * from './codec.ts';
export { auditValues } from './values.ts';

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
  /** the row's id, when the request was given one beforehand (the id idjag generated for it, the ID-JAG's jti) */
  id?: string | undefined;
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
  const id = r.id ?? uuidv7(at);
  const row: AuditLogTable = {
    id,
    at,
    request_id: encodeOwnId(r.requestId, id),
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
    jti: encodeOwnId(r.jti ?? null, id),
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
  // after the columns they refer to, as those are stored (bounded)
  row.checks = encodeChecks(r.checks, { ...row, jti: r.jti ?? null }, await internValues(db, internable(r.checks)));
  row.explanation = encodeExplanation(row.explanation, row);
  await commitsOf(db).write(row);
  return id;
}

/** Rows per commit at most: a multi-row INSERT of them stays under either database's limit on parameters. */
const MAX_BATCH = 200;

interface Pending {
  row: AuditLogTable;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit: the rows of exchanges decided at about the same time are written in one transaction, and each
 * exchange is answered once its row is committed, never before. One commit per batch instead of one per row:
 * on SQLite the pages the rows share (the table's last page, each index's) go to the WAL once, not once per row;
 * on PostgreSQL one round trip carries them all. A batch that fails is retried row by row, so a row the
 * database refuses fails only its own exchange.
 */
class GroupCommit {
  readonly #db: DB;
  #queue: Pending[] = [];
  #draining = false;

  constructor(db: DB) {
    this.#db = db;
  }

  write(row: AuditLogTable): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ row, resolve, reject });
      if (!this.#draining) {
        this.#draining = true;
        // one turn of the event loop first: exchanges finishing meanwhile join this commit
        setImmediate(() => void this.#drain());
      }
    });
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length) {
        const batch = this.#queue.splice(0, MAX_BATCH);
        try {
          await this.#insert(batch.map((p) => p.row));
          for (const p of batch) p.resolve();
        } catch (err) {
          if (batch.length === 1) batch[0]!.reject(err);
          else await Promise.all(batch.map((p) => this.#insert([p.row]).then(p.resolve, p.reject)));
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  async #insert(rows: AuditLogTable[]): Promise<void> {
    // PostgreSQL: one statement, one round trip. SQLite: the statement prepared once, run for each row in one
    // transaction (a multi-row INSERT would be a new statement for every batch size), whose write lock is
    // waited for without stopping the worker (immediate.ts).
    if (onPostgres(this.#db)) {
      if (rows.length === 1) await insertDecision(this.#db, rows[0]!);
      else await this.#db.insertInto('audit_log').values(rows).execute();
      return;
    }
    await immediateTransaction(this.#db, async (trx) => {
      for (const row of rows) await insertDecision(this.#db, row, trx);
    });
  }
}

const commits = new WeakMap<DB, GroupCommit>();
const commitsOf = (db: DB): GroupCommit => {
  let c = commits.get(db);
  if (!c) {
    c = new GroupCommit(db);
    commits.set(db, c);
  }
  return c;
};
