import { appendFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as yieldToRequests } from 'node:timers/promises';
import type { DB } from '../db/index.ts';
import { decodeChecks, decodeExplanation, decodeOwnId, decodeResources, decodeRuleIds, decodeTokenType, decodeWarnings, rowFacts } from './codec.ts';
import { auditValues } from './values.ts';

/**
 * Retention of the two logs: token-exchange decisions (`audit_log`) and sign-in attempts (`login_events`)
 * older than `days` leave them, in bounded batches (each a short read and delete on the log's time index),
 * yielding to requests between batches so the token endpoint keeps answering while a large backlog is worked
 * off. With an archive directory, each batch is first appended to a JSON Lines file there (`audit-` or
 * `logins-`, one file per UTC day of the rows), and deleted only once written.
 */

export interface RetentionSettings {
  /** keep this many days; 0 keeps everything */
  days: number;
  /** append what leaves the log to `<dir>/audit-YYYY-MM-DD.jsonl` before deleting it */
  archiveDir?: string | undefined;
  /** rows per batch */
  batch?: number;
}

export const RETENTION_BATCH = 1000;
const DAY_MS = 24 * 3600 * 1000;

/** One archived decision: the row as the admin's JSON export writes it. */
function archivedDecision(r: Record<string, unknown>, values: ReadonlyMap<number, string>): string {
  const id = r.id as string;
  return JSON.stringify({
    ...r,
    request_id: decodeOwnId(r.request_id as string, id),
    jti: decodeOwnId(r.jti as string | null, id),
    time: new Date(r.at as number).toISOString(),
    subject_token_type: decodeTokenType(r.subject_token_type as string | null),
    actor_token_type: decodeTokenType(r.actor_token_type as string | null),
    resources: decodeResources(r.resources as string | null),
    rule_ids: decodeRuleIds(r.rule_id as string | null),
    explanation: decodeExplanation(r as unknown as Parameters<typeof decodeExplanation>[0]),
    checks: decodeChecks(r.checks as string, rowFacts(r as unknown as Parameters<typeof rowFacts>[0], values)),
    warnings: decodeWarnings(r.warnings as string | null),
  });
}

const archivedLogin = (r: Record<string, unknown>, _values: ReadonlyMap<number, string>): string => JSON.stringify({ ...r, time: new Date(r.at as number).toISOString() });

const LOGS = [
  { table: 'audit_log', file: 'audit', line: archivedDecision },
  { table: 'login_events', file: 'logins', line: archivedLogin },
] as const;

type Log = (typeof LOGS)[number];

async function archive(db: DB, dir: string, log: Log, rows: Record<string, unknown>[]): Promise<void> {
  const values = log.table === 'audit_log' ? await auditValues(db) : new Map<number, string>();
  const byDay = new Map<string, string[]>();
  for (const r of rows) {
    const day = new Date(r.at as number).toISOString().slice(0, 10);
    byDay.set(day, [...(byDay.get(day) ?? []), log.line(r, values)]);
  }
  await mkdir(dir, { recursive: true });
  for (const [day, lines] of byDay) await appendFile(join(dir, `${log.file}-${day}.jsonl`), `${lines.join('\n')}\n`, { mode: 0o600 });
}

export interface RetentionOutcome {
  deleted: number;
  archived: number;
}

async function sweep(db: DB, log: Log, s: RetentionSettings, cutoff: number): Promise<RetentionOutcome> {
  const batch = s.batch ?? RETENTION_BATCH;
  let deleted = 0;
  let archived = 0;
  for (;;) {
    const rows = await db.selectFrom(log.table).selectAll().where('at', '<', cutoff).orderBy('at').orderBy('id').limit(batch).execute() as Record<string, unknown>[];
    if (rows.length === 0) break;
    if (s.archiveDir) {
      await archive(db, s.archiveDir, log, rows);
      archived += rows.length;
    }
    const res = await db.deleteFrom(log.table).where('id', 'in', rows.map((r) => r.id as string)).executeTakeFirst();
    deleted += Number(res.numDeletedRows);
    if (rows.length < batch) break;
    await yieldToRequests();
  }
  return { deleted, archived };
}

/** Applies the retention once; resolves to how many decisions and sign-in attempts left their logs (and how many were archived). */
export async function applyRetention(db: DB, s: RetentionSettings, nowMs = Date.now()): Promise<RetentionOutcome & { logins: RetentionOutcome }> {
  if (s.days <= 0) return { deleted: 0, archived: 0, logins: { deleted: 0, archived: 0 } };
  const cutoff = nowMs - s.days * DAY_MS;
  const [audit, logins] = [await sweep(db, LOGS[0], s, cutoff), await sweep(db, LOGS[1], s, cutoff)];
  return { ...audit, logins };
}
