import { appendFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as yieldToRequests } from 'node:timers/promises';
import type { DB } from '../db/index.ts';
import { decodeChecks, decodeResources, decodeRuleIds, decodeWarnings } from './codec.ts';

/**
 * Audit retention: decisions older than `days` leave the log, in bounded batches (each a short indexed read
 * and delete on `audit_by_time`), yielding to requests between batches so the token endpoint keeps answering
 * while a large backlog is worked off. With an archive directory, each batch is first appended to a JSON Lines
 * file there (one file per UTC day of the decisions), and deleted only once written.
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
function archived(r: Record<string, unknown>): string {
  return JSON.stringify({
    ...r,
    time: new Date(r.at as number).toISOString(),
    resources: decodeResources(r.resources as string | null),
    rule_ids: decodeRuleIds(r.rule_id as string | null),
    checks: decodeChecks(r.checks as string),
    warnings: decodeWarnings(r.warnings as string | null),
  });
}

async function archive(dir: string, rows: Record<string, unknown>[]): Promise<void> {
  const byDay = new Map<string, string[]>();
  for (const r of rows) {
    const day = new Date(r.at as number).toISOString().slice(0, 10);
    byDay.set(day, [...(byDay.get(day) ?? []), archived(r)]);
  }
  await mkdir(dir, { recursive: true });
  for (const [day, lines] of byDay) await appendFile(join(dir, `audit-${day}.jsonl`), `${lines.join('\n')}\n`, { mode: 0o600 });
}

/** Applies the retention once; resolves to how many decisions left the log (and how many were archived). */
export async function applyRetention(db: DB, s: RetentionSettings, nowMs = Date.now()): Promise<{ deleted: number; archived: number }> {
  if (s.days <= 0) return { deleted: 0, archived: 0 };
  const cutoff = nowMs - s.days * DAY_MS;
  const batch = s.batch ?? RETENTION_BATCH;
  let deleted = 0;
  let archivedRows = 0;
  for (;;) {
    const rows = await db.selectFrom('audit_log').selectAll().where('at', '<', cutoff).orderBy('at').orderBy('id').limit(batch).execute();
    if (rows.length === 0) break;
    if (s.archiveDir) {
      await archive(s.archiveDir, rows as unknown as Record<string, unknown>[]);
      archivedRows += rows.length;
    }
    const res = await db.deleteFrom('audit_log').where('id', 'in', rows.map((r) => r.id)).executeTakeFirst();
    deleted += Number(res.numDeletedRows);
    if (rows.length < batch) break;
    await yieldToRequests();
  }
  return { deleted, archived: archivedRows };
}
