import { decodeJwt, decodeProtectedHeader } from 'jose';
import { Migrator } from 'kysely/migration';
import { migrations } from '../migrations/index.ts';
import { CHECK_CODES } from '../src/audit/codec.ts';
import { auditValues } from '../src/audit/index.ts';
import { internValues } from '../src/audit/values.ts';
import { migrateToLatest, openDatabase } from '../src/db/index.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { signIn } from './helpers/browser.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { exchange } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

/**
 * What an issued exchange's audit row stores once: the request id, the row id and the ID-JAG's jti are one
 * identifier (the row's id), and the ID Token key's kid is a number in audit_values. Every reader (the
 * admin's entry and exports, the client's own view) shows them as they were.
 */

const KEY_CHECK = CHECK_CODES.indexOf('id_token.key');

describe('an issued exchange', () => {
  let idjag: TestServer;
  let api: AdminClient;
  let jti: string;
  let kid: string;
  let requestId: string | null;

  beforeAll(async () => {
    idjag = await startTestServer();
    api = await connectAdmin(idjag.url);
    const alice = await signIn(idjag.url);
    kid = decodeProtectedHeader(alice.tokens.id_token).kid!;
    const res = await exchange(idjag.url, alice.tokens.id_token);
    expect(res.status).toBe(200);
    jti = decodeJwt(res.body.access_token).jti!;
    requestId = res.headers.get('x-request-id');
  });
  afterAll(() => idjag.dispose());

  const stored = () => idjag.database.db.selectFrom('audit_log').selectAll().where('id', '=', jti).executeTakeFirstOrThrow();

  test('stores the request id and the jti as its own id, and the kid as a number', async () => {
    expect(requestId).toBe(jti);
    const row = await stored();
    expect(row).toMatchObject({ request_id: '', jti: '' });
    const values = await auditValues(idjag.database.db);
    const n = [...values].find(([, v]) => v === kid)?.[0];
    expect(n).toEqual(expect.any(Number));
    expect(JSON.parse(row.checks)).toContainEqual([KEY_CHECK, 'p', n]);
    expect(row.checks).not.toContain(kid);
  });

  test('a second exchange with the same key reuses its number; a client-chosen request id is stored as sent', async () => {
    const alice = await signIn(idjag.url);
    const res = await exchange(idjag.url, alice.tokens.id_token, {}, undefined, { 'x-request-id': 'client-trace-42' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('client-trace-42');
    const own = decodeJwt(res.body.access_token).jti!;
    const row = await idjag.database.db.selectFrom('audit_log').selectAll().where('id', '=', own).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ request_id: 'client-trace-42', jti: '' });
    expect((await idjag.database.db.selectFrom('audit_values').select('n').execute()).length).toBe(1);
  });

  test('the admin entry, both exports and the client view show them as they were', async () => {
    const entry = (await api.get(`/audit/${jti}`)).body;
    expect(entry).toMatchObject({ id: jti, request_id: jti, jti });
    expect(entry.checks.find((c: { name: string }) => c.name === 'id_token.key')).toMatchObject({ status: 'passed', message: kid });
    expect(entry.checks.find((c: { name: string }) => c.name === 'issue').message).toContain(`jti ${jti}`);

    const jsonl = (await api.get('/audit/export?format=jsonl&decision=issued')).text.trimEnd().split('\n').map((l) => JSON.parse(l));
    const line = jsonl.find((r) => r.id === jti);
    expect(line).toMatchObject({ request_id: jti, jti });
    expect(line.checks).toContainEqual({ name: 'id_token.key', status: 'passed', message: kid });

    const csv = (await api.get('/audit/export?format=csv&decision=issued')).text.split('\r\n').find((l) => l.startsWith(`${jti},`));
    expect(csv).toContain(`,${jti},`);

    const view = await fetch(`${idjag.url}/conformance/clients/demo-agent?format=json`, {
      headers: { authorization: `Basic ${Buffer.from('demo-agent:demo-agent-secret').toString('base64')}` },
    });
    expect(view.status).toBe(200);
    const attempt = ((await view.json()) as { attempts: { id: string; jti: string; checks: { name: string; message?: string }[] }[] }).attempts.find((a) => a.id === jti)!;
    expect(attempt.jti).toBe(jti);
    expect(attempt.checks.find((c) => c.name === 'id_token.key')!.message).toBe(kid);
  });
});

describe('audit_values', () => {
  let scratch: TestDatabase;
  beforeEach(async () => {
    scratch = await createTestDatabase('idjag-audit-values');
  });
  afterEach(() => scratch.dispose());

  test('two nodes interning the same values at once get the same numbers', async () => {
    const [a, b] = [openDatabase(scratch.location), openDatabase(scratch.location)];
    try {
      await migrateToLatest(a.db);
      const values = ['kid-one', 'kid-two', 'kid-three'];
      const [fromA, fromB] = await Promise.all([internValues(a.db, values), internValues(b.db, [...values].reverse())]);
      expect([...fromA].sort()).toEqual([...fromB].sort());
      expect(new Set(fromA.values()).size).toBe(3);
      expect([...(await auditValues(a.db))].map(([n, v]) => [v, n]).sort()).toEqual([...fromA].sort());
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('down writes the values back into the rows; up again reads the same', async () => {
    const database = openDatabase(scratch.location);
    const migrator = new Migrator({ db: database.db, provider: { getMigrations: async () => migrations } });
    try {
      await migrateToLatest(database.db);
      const numbers = await internValues(database.db, ['kid-3', 'kid-31']);
      const [n3, n31] = [numbers.get('kid-3')!, numbers.get('kid-31')!];
      const row = (id: string, checks: string) => ({
        id, at: 1_700_000_000_000, request_id: '', decision: 'issued' as const, reason: 'issued', explanation: '=300', error: null, client_id: 'c', sub: 's',
        username: null, audience: null, resources: null, scopes_requested: null, scopes_granted: null, rule_id: null, jti: '', exp: null,
        subject_token_type: null, ip: null, user_agent: null, duration_ms: null, checks, warnings: null, details_requested: null, details_granted: null,
        actor_token_type: null, actor_token_hash: null,
      });
      await database.db.insertInto('audit_log').values([
        row('r1', JSON.stringify(['0-10', [KEY_CHECK, 'p', n3], '12-17'])),
        row('r2', JSON.stringify(['0-10', [KEY_CHECK, 'p', n31], '12-17'])),
        row('r3', JSON.stringify(['0-10', [KEY_CHECK, 'f', 'a kid the request named'], -13])),
      ]).execute();
      const checksOf = async () => (await database.db.selectFrom('audit_log').select(['id', 'checks']).orderBy('id').execute()).map((r) => JSON.parse(r.checks));

      const { error } = await migrator.migrateTo('0013_audit_database');
      expect(error).toBeUndefined();
      expect(await checksOf()).toEqual([
        ['0-10', [KEY_CHECK, 'p', 'kid-3'], '12-17'],
        ['0-10', [KEY_CHECK, 'p', 'kid-31'], '12-17'],
        ['0-10', [KEY_CHECK, 'f', 'a kid the request named'], -13],
      ]);
      expect((await migrateToLatest(database.db)).applied).toEqual(['0014_audit_values', '0015_change_counters']);
      expect(await auditValues(database.db)).toEqual(new Map());
    } finally {
      await database.close();
    }
  });
});
