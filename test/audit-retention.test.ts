import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { uuidv7 } from '../src/audit/index.ts';
import { applyRetention } from '../src/audit/retention.ts';
import { CHECK_CODES } from '../src/audit/codec.ts';
import { internValues } from '../src/audit/values.ts';
import { loadConfig } from '../src/config/index.ts';
import type { AuditLogTable } from '../src/db/schema.ts';
import { auditCount } from './helpers/audit.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const DAY = 24 * 3600 * 1000;

const row = (at: number, i: number): AuditLogTable => ({
  id: uuidv7(at), at, request_id: `old-${i}`, decision: 'denied', reason: 'no_rule', explanation: `row ${i}`, error: 'invalid_target',
  client_id: 'demo-agent', sub: null, username: null, audience: null, resources: '["https://mcp.todo.example/mcp"]', scopes_requested: null,
  scopes_granted: null, rule_id: null, jti: null, exp: null, subject_token_type: null, ip: null, user_agent: null, duration_ms: null,
  checks: '[{"name":"policy","status":"failed","message":"m"}]', warnings: null,
  details_requested: null, details_granted: null, actor_token_type: null, actor_token_hash: null,
});

async function insertRows(idjag: TestServer, rows: AuditLogTable[]) {
  for (let i = 0; i < rows.length; i += 200) await idjag.database.db.insertInto('audit_log').values(rows.slice(i, i + 200)).execute();
}

test('the default keeps 90 days; the setting and the archive directory come from flags and environment', () => {
  expect(loadConfig([], { PORT: '0' })).toMatchObject({ auditRetentionDays: 90 });
  expect(loadConfig([], { PORT: '0' }).auditArchiveDir).toBeUndefined();
  expect(loadConfig(['--audit-retention-days', '0', '--audit-archive-dir', '/var/lib/idjag/archive'], {})).toMatchObject({ auditRetentionDays: 0, auditArchiveDir: '/var/lib/idjag/archive' });
  expect(loadConfig([], { IDJAG_AUDIT_RETENTION_DAYS: '30', IDJAG_AUDIT_ARCHIVE_DIR: '/tmp/a' })).toMatchObject({ auditRetentionDays: 30, auditArchiveDir: '/tmp/a' });
  expect(() => loadConfig([], { IDJAG_AUDIT_RETENTION_DAYS: '-1' })).toThrow(/auditRetentionDays/);
});

describe('retention', () => {
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer({ auditRetentionDays: 0 });
  });
  afterAll(() => idjag.dispose());

  test('an archived row reads as it was written: its own id as request id and jti, interned values in full', async () => {
    const at = Date.now() - 400 * DAY;
    const [n] = [...(await internValues(idjag.database.db, ['kid-archived'])).values()];
    const stored = { ...row(at, 0), decision: 'issued' as const, request_id: '', jti: '', checks: JSON.stringify([[CHECK_CODES.indexOf('id_token.key'), 'p', n]]) };
    await insertRows(idjag, [stored]);
    const dir = join(idjag.dir, 'archive-own-ids');
    expect(await applyRetention(idjag.database.db, { days: 365, archiveDir: dir }, Date.now())).toMatchObject({ deleted: 1, archived: 1 });
    const [line] = readdirSync(dir).flatMap((f) => readFileSync(join(dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>));
    expect(line).toMatchObject({ id: stored.id, request_id: stored.id, jti: stored.id, checks: [{ name: 'id_token.key', status: 'passed', message: 'kid-archived' }] });
  });

  test('decisions older than the retention leave the log in batches, archived first by day; newer ones stay', async () => {
    const now = Date.now();
    const old = Array.from({ length: 2_500 }, (_, i) => row(now - 40 * DAY - i * 60_000, i));
    const recent = Array.from({ length: 30 }, (_, i) => row(now - 10 * DAY - i, 10_000 + i));
    const before = await auditCount(idjag);
    await insertRows(idjag, [...old, ...recent]);
    const dir = join(idjag.dir, 'archive');

    expect(await applyRetention(idjag.database.db, { days: 30, archiveDir: dir, batch: 700 }, now)).toEqual({ deleted: 2_500, archived: 2_500, logins: { deleted: 0, archived: 0 } });
    expect(await auditCount(idjag)).toBe(before + recent.length);
    const files = readdirSync(dir).filter((f) => f.startsWith('audit-')).sort();
    expect(files.every((f) => /^audit-\d{4}-\d{2}-\d{2}\.jsonl$/.test(f))).toBe(true);
    const lines = files.flatMap((f) => readFileSync(join(dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { request_id: string; checks: unknown[]; time: string }));
    expect(lines.map((l) => l.request_id).sort()).toEqual(old.map((r) => r.request_id).sort());
    expect(lines[0]!.checks).toEqual([{ name: 'policy', status: 'failed', message: 'm' }]);
    for (const f of files) {
      const day = f.slice(6, 16);
      expect(readFileSync(join(dir, f), 'utf8').trim().split('\n').every((l) => (JSON.parse(l) as { time: string }).time.startsWith(day))).toBe(true);
    }
    // nothing left to do, and 0 days keeps everything
    const none = { deleted: 0, archived: 0, logins: { deleted: 0, archived: 0 } };
    expect(await applyRetention(idjag.database.db, { days: 30, archiveDir: dir }, now)).toEqual(none);
    expect(await applyRetention(idjag.database.db, { days: 0 }, now + 1000 * DAY)).toEqual(none);
  });

  test('sign-in attempts older than the retention leave login_events the same way', async () => {
    const now = Date.now();
    const login = (at: number, i: number) => ({
      id: uuidv7(at), at, request_id: `login-${i}`, event: 'failed', reason: 'wrong_password', username: 'alice', sub: null,
      client_id: 'demo-agent', ip: '127.0.0.1', user_agent: 'test', failures: 1, retry_after: null,
    });
    await idjag.database.db.insertInto('login_events').values([login(now - 40 * DAY, 1), login(now - 41 * DAY, 2), login(now - DAY, 3)] as never).execute();
    const dir = join(idjag.dir, 'archive-logins');
    const out = await applyRetention(idjag.database.db, { days: 30, archiveDir: dir }, now);
    expect(out.logins).toEqual({ deleted: 2, archived: 2 });
    const left = await idjag.database.db.selectFrom('login_events').select('request_id').where('request_id', 'like', 'login-%').execute();
    expect(left).toEqual([{ request_id: 'login-3' }]);
    const archived = readdirSync(dir).flatMap((f) => readFileSync(join(dir, f), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { request_id: string }).request_id));
    expect(archived.sort()).toEqual(['login-1', 'login-2']);
    expect(readdirSync(dir).every((f) => /^logins-\d{4}-\d{2}-\d{2}\.jsonl$/.test(f))).toBe(true);
  });

  test('the token endpoint keeps answering while a backlog is worked off', async () => {
    const now = Date.now();
    await insertRows(idjag, Array.from({ length: 5_000 }, (_, i) => row(now - 100 * DAY - i, 20_000 + i)));
    let swept = false;
    const sweeping = applyRetention(idjag.database.db, { days: 90, batch: 250 }, now).then((r) => { swept = true; return r; });
    // health checks sent one after another while the batches run: some are answered before the sweep ends
    const during: number[] = [];
    while (!swept) {
      const res = await fetch(`${idjag.url}/healthz`);
      if (!swept) during.push(res.status);
    }
    expect(during.length).toBeGreaterThan(0);
    expect(during.every((s) => s === 200)).toBe(true);
    expect((await sweeping).deleted).toBe(5_000);
  });
});

test('a server applies the retention when it starts and every 10 minutes after', async () => {
  const first = await startTestServer({ auditRetentionDays: 0 });
  const now = Date.now();
  await insertRows(first, Array.from({ length: 50 }, (_, i) => row(now - 8 * DAY - i, i)));
  const kept = await auditCount(first);
  await first.stop();
  const second = await startTestServer({ auditRetentionDays: 7 }, first.testDatabase);
  try {
    expect(await auditCount(second)).toBe(kept - 50);
  } finally {
    await second.dispose();
  }
});
