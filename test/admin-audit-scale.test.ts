import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditPageQuery, AuditPage, auditQuery, searchAudit, type AuditFilter } from '../src/admin/audit-query.ts';
import { encodeCursor } from '../src/admin/changes.ts';
import { migrateToLatest, openDatabase, type SqliteDatabase } from '../src/db/index.ts';
import { sqliteOnly } from './helpers/database.ts';

/**
 * The audit query at 1,000,000 rows: the first page and a page 90% deep, for every filter, read through an
 * index, with no full scan and no sort of the filtered set (EXPLAIN QUERY PLAN), and return the right rows.
 * SQLite only: the plans asserted are SQLite's (PostgreSQL's planner words and chooses differently), and the
 * million rows are loaded through SQLite's own recursive INSERT on a scratch file with durability off. The
 * query's results on PostgreSQL are covered by admin-audit.test.ts.
 */

const ROWS = 1_000_000;
const BASE = 1_700_000_000_000;
sqliteOnly('the audit query at a million rows (SQLite)', () => {
  let dir: string;
  let database: SqliteDatabase;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'idjag-audit-scale-'));
    const opened = openDatabase(join(dir, 'audit.db'));
    if (opened.dialect !== 'sqlite') throw new Error('a SQLite file path opened as another dialect');
    database = opened;
    await migrateToLatest(database.db);
    const { sqlite } = database;
    // a scratch database: durability is not the point, load speed is
    sqlite.pragma('journal_mode = OFF');
    sqlite.pragma('synchronous = OFF');
    sqlite.pragma('cache_size = -262144');
    sqlite.prepare("insert into users (sub, username, email, email_verified, name, password_hash, disabled, created_at, updated_at) values ('sub-42', 'alice', null, 0, null, null, 0, 0, 0)").run();
    // One INSERT ... SELECT over a recursive counter, in one transaction: the rows never pass through JavaScript.
    // Ids are UUIDv7-shaped with the row's millisecond in front, like the ones the exchange writes.
    sqlite.exec('begin');
    sqlite.prepare(`
      with recursive n(i) as (select 0 union all select i + 1 from n where i < ?)
      insert into audit_log (id, at, request_id, decision, reason, explanation, error, client_id, sub, username, audience, resources,
        scopes_requested, scopes_granted, rule_id, jti, exp, subject_token_type, ip, user_agent, duration_ms, checks)
      select printf('%08x-%04x-7000-8000-%012x', (? + i * 10) >> 16, (? + i * 10) & 65535, i), ? + i * 10, 'req-' || i,
        case when i % 100 = 1 then 'error' when i % 10 = 0 then 'denied' else 'issued' end,
        case when i % 5000 = 7 then 'step_up_required' when i % 100 = 1 then 'internal_error' when i % 10 = 0 then 'subject_not_allowed' else 'issued' end,
        'synthetic', null,
        case when i % 10000 = 3 then 'client-rare' else 'client-' || (i % 50) end,
        'sub-' || (i % 2000), 'user-' || (i % 2000), 'https://auth.example',
        '["https://mcp' || (i % 20) || '.example/mcp"]', 'a b', 'a', 'rule-1', null, null, 'urn:ietf:params:oauth:token-type:id_token',
        '127.0.0.1', 'synthetic', 1.5, '[]'
      from n`).run(ROWS - 1, BASE, BASE, BASE);
    sqlite.exec('commit');
  }, 180_000);

  afterAll(async () => {
    await database?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const FILTERS: Record<string, AuditFilter> = {
    'no filter': {},
    decision: { decision: 'denied' },
    issued: { decision: 'issued' },
    client: { client_id: 'client-7' },
    'rare client': { client_id: 'client-rare' },
    user: { user: 'alice' },
    'MCP server': { resource: 'https://mcp3.example/mcp' },
    reason: { reason: 'step_up_required' },
    'time range': { from: BASE + 2_000_000, to: BASE + 8_000_000 },
    'client and decision': { client_id: 'client-1', decision: 'error' },
    'user in a time range': { user: 'alice', from: BASE + 1_000_000, to: BASE + 9_000_000 },
  };

  async function plan(p: AuditPage): Promise<string[]> {
    const { sql, parameters } = (await auditPageQuery(database.db, p)).compile();
    return (database.sqlite.prepare(`explain query plan ${sql}`).all(...(parameters as unknown[])) as { detail: string }[]).map((r) => r.detail);
  }

  /** The cursor of the row 90% of the way into the filtered set, as if the admin had paged that far. */
  async function deepCursor(f: AuditFilter): Promise<{ cursor: string; offset: number }> {
    const count = Number((await (await auditQuery(database.db, f)).clearOrderBy().select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
    const offset = Math.floor(count * 0.9);
    const row = await (await auditQuery(database.db, f)).select(['at', 'id']).limit(1).offset(offset).executeTakeFirstOrThrow();
    return { cursor: encodeCursor(row.at, row.id), offset };
  }

  test('the table holds a million rows', () => {
    expect((database.sqlite.prepare('select count(*) as n from audit_log').get() as { n: number }).n).toBe(ROWS);
  });

  describe.each(Object.entries(FILTERS))('%s', (_name, filter) => {
    test('first page and a 90%-deep page read an index, never the table, and sort only the rows of one millisecond', async () => {
      const { cursor, offset } = await deepCursor(filter);
      for (const p of [AuditPage.parse({ ...filter, limit: 50 }), AuditPage.parse({ ...filter, limit: 50, cursor })]) {
        const lines = await plan(p);
        const onTable = lines.filter((l) => /\baudit_log\b/.test(l));
        expect(onTable).toHaveLength(1);
        expect(onTable[0]).toMatch(/^(SCAN|SEARCH) audit_log USING INDEX audit_by_\w+/);
        // a filter seeks on its own index; walking the time index and testing each row would be a scan in disguise
        if (Object.keys(filter).length) expect(onTable[0]).toMatch(/^SEARCH /);
        // the index gives the order by `at`; only rows of the same millisecond are sorted by id, as they come
        // (SQLite's block sort of the last ORDER BY term), never the whole filtered set
        for (const sorts of lines.filter((l) => /TEMP B-TREE/.test(l))) expect(sorts).toMatch(/^USE TEMP B-TREE FOR (LAST TERM|RIGHT PART) OF ORDER BY$/);
        // a deep page seeks to the cursor inside the index instead of walking down to it
        if (p.cursor) expect(onTable[0]).toMatch(/\bat<\?/);
      }

      // and the deep page holds the right rows: the ones right after the cursor, newest first
      const started = performance.now();
      const page = await searchAudit(database.db, AuditPage.parse({ ...filter, limit: 50, cursor }));
      const ms = performance.now() - started;
      const expected = await (await auditQuery(database.db, filter)).select('id').limit(50).offset(offset + 1).execute();
      expect(page.items.map((r) => r.id)).toEqual(expected.map((r) => r.id));
      // a generous bound that an index range read meets by two orders of magnitude and a full scan does not
      expect(ms).toBeLessThan(250);
    });
  });
});
