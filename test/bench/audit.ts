/**
 * The admin's audit query at scale: a scratch SQLite database with the real schema and 1,000,000 synthetic
 * audit rows (bulk insert, the approach of test/admin-audit-scale.test.ts), then the page the admin API's
 * GET /admin/api/audit runs (searchAudit: auditQuery, one keyset page of 50), timed for the first page and
 * for a deep page (the page after 90% of the filtered set, reached through the cursor, as if the admin had
 * paged that far), unfiltered and with filters. Each timing is the mean of several runs after the first
 * (the first, reported apart, reads pages not yet cached).
 *
 * Prints one JSON line; progress on stderr. The database lives in a temporary directory, removed at the end.
 *
 *   node test/bench/audit.ts [--rows 1000000] [--runs 20]
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type SQLite from 'better-sqlite3';
import { AuditPage, auditPageQuery, auditQuery, searchAudit, type AuditFilter } from '../../src/admin/audit-query.ts';
import { encodeCursor } from '../../src/admin/changes.ts';
import { AUDIT_SCHEMA, auditFileOf, migrateToLatest, type DB } from '../../src/db/index.ts';
import { DECISION_CHECKS, ID_TOKEN_CHECKS, REQUEST_CHECKS } from '../../src/exchange/checks.ts';
import { openSqlite } from './fixtures.ts';

export const AUDIT_BASE_MS = 1_700_000_000_000;

/**
 * Fills an empty, migrated audit_log with `rows` synthetic decisions, 10 ms apart from AUDIT_BASE_MS: 50
 * clients (client-0 … client-49) and one rare one, 2,000 users, 20 MCP servers; 1% errors, 9% denied, the
 * rest issued. Ids are UUIDv7-shaped with the row's millisecond in front, like the ones the exchange writes.
 * One INSERT ... SELECT over a recursive counter in one transaction, so the rows never pass through
 * JavaScript. A scratch database: journal and sync are off. Each row carries a realistic check list and
 * explanation (about 2 KiB a row on disk), so the table's pages are as many as a real log's. Returns the ms.
 */
export function fillAuditLog(sqlite: SQLite.Database, rows: number): number {
  for (const schema of ['main', AUDIT_SCHEMA]) {
    sqlite.pragma(`${schema}.journal_mode = OFF`);
    sqlite.pragma(`${schema}.synchronous = OFF`);
    sqlite.pragma(`${schema}.cache_size = -262144`);
  }
  // a realistic row: the check list an issued token records, and an explanation of the usual length
  const checks = JSON.stringify([...REQUEST_CHECKS, ...ID_TOKEN_CHECKS, ...DECISION_CHECKS].map((c) => ({ name: c.name, status: 'passed' })));
  const explanation = 'allowed by rule rule-1 (demo-agent → Todo MCP server): alice is in group engineering; scopes data.read data.write granted';
  const t = performance.now();
  sqlite.exec('begin');
  sqlite.prepare(`
    with recursive n(i) as (select 0 union all select i + 1 from n where i < ?)
    insert into audit_log (id, at, request_id, decision, reason, explanation, error, client_id, sub, username, audience, resources,
      scopes_requested, scopes_granted, rule_id, jti, exp, subject_token_type, ip, user_agent, duration_ms, checks)
    select printf('%08x-%04x-7000-8000-%012x', (? + i * 10) >> 16, (? + i * 10) & 65535, i), ? + i * 10, 'req-' || i,
      case when i % 100 = 1 then 'error' when i % 10 = 0 then 'denied' else 'issued' end,
      case when i % 5000 = 7 then 'step_up_required' when i % 100 = 1 then 'internal_error' when i % 10 = 0 then 'subject_not_allowed' else 'issued' end,
      ?, null,
      case when i % 10000 = 3 then 'client-rare' else 'client-' || (i % 50) end,
      'sub-' || (i % 2000), 'user-' || (i % 2000), 'https://auth.example',
      '["https://mcp' || (i % 20) || '.example/mcp"]', 'data.read data.write', 'data.read data.write', 'rule-1',
      printf('%032x', i), ? / 1000 + i / 100 + 300, 'urn:ietf:params:oauth:token-type:id_token',
      '127.0.0.1', 'bench-agent/1.0', 1.5, ?
    from n`).run(rows - 1, AUDIT_BASE_MS, AUDIT_BASE_MS, AUDIT_BASE_MS, explanation, AUDIT_BASE_MS, checks);
  sqlite.exec('commit');
  return performance.now() - t;
}

export interface AuditTiming {
  filter: string;
  /** rows the filter selects */
  matching: number;
  /** how many rows the deep page starts after */
  deepOffset: number;
  first: { firstRunMs: number; meanMs: number; maxMs: number; plan: string };
  deep: { firstRunMs: number; meanMs: number; maxMs: number; plan: string };
}

export interface AuditScaleResult {
  rows: number;
  runs: number;
  pageSize: number;
  insertMs: number;
  databaseMiB: number;
  timings: AuditTiming[];
}

const FILTERS: [string, AuditFilter][] = [
  ['no filter', {}],
  ['client', { client_id: 'client-7' }],
  ['decision', { decision: 'denied' }],
  ['client and decision', { client_id: 'client-1', decision: 'error' }],
];
const PAGE = 50;

async function count(db: DB, f: AuditFilter): Promise<number> {
  return Number((await (await auditQuery(db, f)).clearOrderBy().select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
}

async function planOf(db: DB, sqlite: SQLite.Database, p: AuditPage): Promise<string> {
  const { sql, parameters } = (await auditPageQuery(db, p)).compile();
  return (sqlite.prepare(`explain query plan ${sql}`).all(...(parameters as unknown[])) as { detail: string }[]).map((r) => r.detail).join('; ');
}

/** The admin API's page, `runs` + 1 times: the first run apart, then mean and max of the others. */
async function timePage(db: DB, sqlite: SQLite.Database, p: AuditPage, runs: number, expectFirstId: string) {
  const times: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const t = performance.now();
    const page = await searchAudit(db, p);
    times.push(performance.now() - t);
    if (page.items.length !== PAGE || page.items[0]!.id !== expectFirstId) {
      throw new Error(`audit page ${JSON.stringify(p)}: ${page.items.length} items, first ${page.items[0]?.id}, expected ${expectFirstId}`);
    }
  }
  const rest = times.slice(1);
  const round = (n: number) => Math.round(n * 1000) / 1000;
  return {
    firstRunMs: round(times[0]!),
    meanMs: round(rest.reduce((a, b) => a + b, 0) / rest.length),
    maxMs: round(Math.max(...rest)),
    plan: await planOf(db, sqlite, p),
  };
}

export async function auditScale(rows: number, runs: number, progress: (s: string) => void = () => {}): Promise<AuditScaleResult> {
  const dir = mkdtempSync(join(tmpdir(), 'idjag-bench-audit-'));
  const file = join(dir, 'audit.db');
  const database = openSqlite(file);
  try {
    const { db, sqlite } = database;
    await migrateToLatest(db);
    progress(`inserting ${rows.toLocaleString('en-US')} audit rows ...`);
    const insertMs = fillAuditLog(sqlite, rows);
    progress(` ${(insertMs / 1000).toFixed(1)} s; timing pages ...`);
    const timings: AuditTiming[] = [];
    for (const [name, filter] of FILTERS) {
      const matching = await count(db, filter);
      const deepOffset = Math.floor(matching * 0.9);
      // the cursor the admin would hold after paging down to deepOffset rows: the last row of the previous page
      const before = await (await auditQuery(db, filter)).select(['at', 'id']).limit(2).offset(deepOffset - 1).execute();
      const top = await (await auditQuery(db, filter)).select('id').limit(1).executeTakeFirstOrThrow();
      if (before.length !== 2) throw new Error(`${name}: fewer than ${deepOffset + 1} rows`);
      const cursor = encodeCursor(before[0]!.at, before[0]!.id);
      timings.push({
        filter: name,
        matching,
        deepOffset,
        first: await timePage(db, sqlite, AuditPage.parse({ ...filter, limit: PAGE }), runs, top.id),
        deep: await timePage(db, sqlite, AuditPage.parse({ ...filter, limit: PAGE, cursor }), runs, before[1]!.id),
      });
    }
    return { rows, runs, pageSize: PAGE, insertMs, databaseMiB: Math.round(statSync(auditFileOf(file)).size / 2 ** 20), timings };
  } finally {
    await database.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '20' } }, strict: true });
  const rows = Number(values.rows);
  const runs = Number(values.runs);
  if (!Number.isInteger(rows) || rows < 1000 || !Number.isInteger(runs) || runs < 1) {
    console.error('usage: audit.ts [--rows n ≥ 1000] [--runs n ≥ 1]');
    process.exit(2);
  }
  const result = await auditScale(rows, runs, (s) => process.stderr.write(s));
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
