/**
 * Change impact over HTTP: a rule change or an import, previewed with `?impact=preview` (nothing saved), replays
 * the recorded decisions of the last days through the exchange pipeline with the rules as they are and as the
 * change would leave them. The decisions come from real token exchanges (and, for the window, the time bounds and
 * the cap, from audit rows written as the exchange writes them).
 */
import { recordOutcome } from '../src/audit/index.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { auditCount } from './helpers/audit.ts';
import { signIn } from './helpers/browser.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let api: AdminClient;
let aliceSub: string;
/** the audit ids of the seeded exchanges, by name */
const ids: Record<string, string> = {};

const DAY = 86_400_000;
const changeCount = async () => Number((await idjag.database.db.selectFrom('admin_changes').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
const newestAuditId = async () => (await idjag.database.db.selectFrom('audit_log').select('id').orderBy('at', 'desc').orderBy('id', 'desc').limit(1).executeTakeFirstOrThrow()).id;

/** Every audit id an impact names as an example of `kind`. */
const examples = (impact: any, kind: string): string[] => impact.examples.filter((e: { kind: string }) => e.kind === kind).map((e: { id: string }) => e.id).sort();
const nonZero = (impact: any) => Object.fromEntries(Object.entries(impact.counts as Record<string, number>).filter(([, n]) => n > 0));

beforeAll(async () => {
  idjag = await startTestServer();
  api = await connectAdmin(idjag.url);
  const alice = (await signIn(idjag.url, { username: 'alice', password: 'alice' })).tokens.id_token as string;
  const bob = (await signIn(idjag.url, { username: 'bob', password: 'bob' })).tokens.id_token as string;
  aliceSub = (await idjag.database.db.selectFrom('users').select('sub').where('username', '=', 'alice').executeTakeFirstOrThrow()).sub;
  const record = async (name: string, res: Promise<{ status: number }>, status: number) => {
    expect((await res).status).toBe(status);
    ids[name] = await newestAuditId();
  };
  await record('aliceRead', exchange(idjag.url, alice, { scope: 'todos.read' }), 200);
  await record('aliceDefaults', exchange(idjag.url, alice), 200);
  await record('aliceWrite', exchange(idjag.url, alice, { scope: 'todos.write' }), 200);
  await record('aliceDemo', exchange(idjag.url, alice, { audience: `${idjag.issuer}/demo/as`, resource: `${idjag.issuer}/demo/mcp` }), 200);
  await record('bobDenied', exchange(idjag.url, bob), 400);
  // refused before the policy: a replay cannot re-check a token, so this one is never replayed
  await record('badToken', exchange(idjag.url, 'not-a-token'), 400);
});
afterAll(() => idjag.dispose());

describe('previewing a rule change', () => {
  test('disabling a rule flips exactly the decisions it issued; the rest are unchanged; nothing is saved', async () => {
    const [changes, audits] = [await changeCount(), await auditCount(idjag)];
    const res = await api.post('/rules/engineering-todo/disable?impact=preview');
    expect(res.status).toBe(200);
    expect(res.body.dry_run).toBe(true);
    expect(res.body.rule).toMatchObject({ id: 'engineering-todo', enabled: false });
    const { impact } = res.body;
    expect(nonZero(impact)).toEqual({ now_denied: 3, unchanged: 2 });
    expect(examples(impact, 'now_denied')).toEqual([ids.aliceRead, ids.aliceDefaults, ids.aliceWrite].sort());
    expect(impact).toMatchObject({ replayed: 5, capped: false, clients: ['demo-agent'], drifted: 0, window: { days: 7 } });
    expect(impact.by_target).toEqual([{ client_id: 'demo-agent', audience: TODO_AS, resources: [TODO_MCP], now_denied: 3, now_issued: 0, narrowed: 0, widened: 0, reshaped: 0 }]);
    const example = impact.examples.find((e: { id: string }) => e.id === ids.aliceWrite);
    expect(example).toMatchObject({ kind: 'now_denied', username: 'alice', scopes_requested: 'todos.write', before: { decision: 'issued', scopes: ['todos.write'] }, after: { decision: 'denied', reason: 'rule_disabled' } });
    expect(impact.limits.join(' ')).toMatch(/groups.*as they are now/);
    expect(impact.limits.join(' ')).toMatch(/step-up/);

    expect((await api.get('/rules/engineering-todo')).body.enabled).toBe(true);
    expect([await changeCount(), await auditCount(idjag)]).toEqual([changes, audits]);
  });

  test('narrowing the scope list narrows exactly the decisions that had the dropped scope, and denies those that asked only for it', async () => {
    const res = await api.patch('/rules/engineering-todo?impact=preview', { scopes: ['todos.read'], default_scopes: ['todos.read'] });
    expect(res.status).toBe(200);
    const { impact } = res.body;
    expect(nonZero(impact)).toEqual({ narrowed: 1, now_denied: 1, unchanged: 3 });
    expect(examples(impact, 'narrowed')).toEqual([ids.aliceDefaults]);
    expect(examples(impact, 'now_denied')).toEqual([ids.aliceWrite]);
    expect(impact.examples.find((e: { kind: string }) => e.kind === 'narrowed')).toMatchObject({
      before: { scopes: ['todos.read', 'todos.write'] }, after: { decision: 'issued', scopes: ['todos.read'] },
    });
    expect((await api.get('/rules/engineering-todo')).body.scopes).toEqual(['todos.read', 'todos.write']);
  });

  test('a new rule for sales would issue exactly bob\'s denied exchange', async () => {
    const rule = { id: 'sales-todo', client_id: 'demo-agent', audience: TODO_AS, resource: TODO_MCP, who: { groups: ['sales'] }, scopes: ['todos.read'], default_scopes: ['todos.read'] };
    const res = await api.post('/rules?impact=preview', rule);
    expect(res.status).toBe(200);
    expect(nonZero(res.body.impact)).toEqual({ now_issued: 1, unchanged: 4 });
    expect(examples(res.body.impact, 'now_issued')).toEqual([ids.bobDenied]);
    expect(res.body.impact.examples[0].after).toEqual({ decision: 'issued', reason: 'issued', scopes: ['todos.read'], rule_ids: ['sales-todo'] });
    expect((await api.get('/rules/sales-todo')).status).toBe(404);
  });

  test('deleting, previewed: the same flips as disabling; the rule stays', async () => {
    const res = await api.delete('/rules/engineering-todo?impact=preview');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ dry_run: true });
    expect(res.body.rule).toBeUndefined();
    expect(nonZero(res.body.impact)).toEqual({ now_denied: 3, unchanged: 2 });
    expect((await api.get('/rules/engineering-todo')).status).toBe(200);
  });

  test('a change that would not save is refused the same way as a preview, with nothing replayed', async () => {
    const res = await api.patch('/rules/engineering-todo?impact=preview', { lifetime: 7200 });
    expect(res.status).toBe(400);
    expect(res.body.issues).toEqual([{ path: ['lifetime'], message: 'at most 3600 s' }]);
    expect((await api.post('/rules/no-such-rule/disable?impact=preview')).status).toBe(404);
    const bad = await api.post('/rules/engineering-todo/disable?impact=maybe');
    expect(bad.status).toBe(400);
    expect(bad.body.issues[0].path).toEqual(['impact']);
    expect((await api.get('/rules/engineering-todo')).body.enabled).toBe(true);
  });
});

describe('saving with the impact', () => {
  test('?impact=true saves, answers with the impact, and keeps it in the change log entry', async () => {
    const res = await api.post('/rules/engineering-todo/disable?impact=true');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: 'engineering-todo', enabled: false, impact: { counts: { now_denied: 3 } } });
    const log = (await api.get('/changes?entity=rule&entity_id=engineering-todo&limit=1')).body.items[0];
    expect(log).toMatchObject({ action: 'disable', impact: { counts: { now_denied: 3, unchanged: 2 }, replayed: 5 } });
    expect(examples(log.impact, 'now_denied')).toEqual([ids.aliceRead, ids.aliceDefaults, ids.aliceWrite].sort());

    // enabling it again, saved without ?impact: the change log entry has none
    expect((await api.post('/rules/engineering-todo/enable')).body.enabled).toBe(true);
    expect((await api.get('/changes?entity=rule&entity_id=engineering-todo&limit=1')).body.items[0]).toMatchObject({ action: 'enable', impact: null });
  });

  test('a delete saved with its impact answers 200 with the rule\'s id and the impact', async () => {
    const rule = { id: 'temp-rule', client_id: 'demo-agent', audience: TODO_AS, resource: 'https://mcp.todo.example/admin', who: 'everyone', scopes: ['todos.admin'] };
    const created = await api.post('/rules?impact=true', rule);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ id: 'temp-rule', impact: { counts: { now_issued: 0 } } });
    const deleted = await api.delete('/rules/temp-rule?impact=true');
    expect(deleted.status).toBe(200);
    expect(deleted.body).toMatchObject({ deleted: 'temp-rule', impact: { replayed: 5 } });
    expect((await api.get('/rules/temp-rule')).status).toBe(404);
  });
});

describe('importing a document', () => {
  test('a dry run with ?impact=true replays every client\'s decisions over the imported state: groups included', async () => {
    const changes = await changeCount();
    const res = await api.post('/import?dry_run=1&impact=true', { users: [{ username: 'alice', email: 'alice@example.com', name: 'Alice Anderson', groups: ['sales'] }] });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ dry_run: true, applied: false, summary: { update: 1 } });
    // alice leaves engineering: all four of her exchanges (two rules, two Resource ASes) would be refused
    expect(nonZero(res.body.impact)).toEqual({ now_denied: 4, unchanged: 1 });
    expect(res.body.impact.clients).toBeNull();
    expect(examples(res.body.impact, 'now_denied')).toEqual([ids.aliceRead, ids.aliceDefaults, ids.aliceWrite, ids.aliceDemo].sort());
    expect(await changeCount()).toBe(changes);
    expect((await api.get('/users/alice')).body.groups).toEqual(['engineering']);
    // ?impact=preview is a dry run too
    const preview = await api.post('/import?impact=preview', { users: [{ username: 'alice', email: 'alice@example.com', name: 'Alice Anderson', groups: ['sales'] }] });
    expect(preview.body).toMatchObject({ dry_run: true, applied: false, impact: { counts: { now_denied: 4 } } });
  });

  test('an import saved with ?impact=true keeps the impact with its first change', async () => {
    const doc = { rules: [{ id: 'import-sales', client_id: 'demo-agent', audience: TODO_AS, resource: TODO_MCP, who: { groups: ['sales'] }, scopes: ['todos.read'], default_scopes: ['todos.read'] }] };
    const res = await api.post('/import?impact=true', doc);
    expect(res.body).toMatchObject({ applied: true, impact: { counts: { now_issued: 1 } } });
    const log = (await api.get('/changes?entity=rule&entity_id=import-sales')).body.items[0];
    expect(log.impact).toMatchObject({ counts: { now_issued: 1 } });
    expect((await api.delete('/rules/import-sales')).status).toBe(204);
  });
});

describe('what the replay reads', () => {
  test('the window: decisions older than the configured days are not replayed', async () => {
    await recordOutcome(idjag.database.db, {
      requestId: 'old', decision: 'issued', reason: 'issued', explanation: 'allowed', clientId: 'demo-agent', sub: aliceSub, username: 'alice',
      audience: TODO_AS, resources: [TODO_MCP], scopesGranted: ['todos.read', 'todos.write'], ruleIds: ['engineering-todo'], checks: [],
    }, Date.now() - 8 * DAY);
    const { impact } = (await api.post('/rules/engineering-todo/disable?impact=preview')).body;
    expect(impact.replayed).toBe(5);
    expect(impact.counts.now_denied).toBe(3);
  });

  test('rule time bounds are read at each decision\'s time: an expiry set between two decisions flips only the later one', async () => {
    const at = (daysAgo: number) => Date.now() - daysAgo * DAY;
    const write = (daysAgo: number) => recordOutcome(idjag.database.db, {
      requestId: `r${daysAgo}`, decision: 'issued', reason: 'issued', explanation: 'allowed', clientId: 'demo-agent', sub: aliceSub, username: 'alice',
      audience: 'urn:example:todo', resources: [TODO_MCP], scopesRequested: ['todos.read'], scopesGranted: ['todos.read'], ruleIds: ['engineering-todo'], checks: [],
    }, at(daysAgo));
    const twoDays = await write(2);
    const oneDay = await write(1);
    const expiresAt = new Date(Math.floor(at(1.5) / 1000) * 1000).toISOString();
    const { impact } = (await api.patch('/rules/engineering-todo?impact=preview', { expires_at: expiresAt })).body;
    // the three from the start of this file and the one of a day ago happened after the expiry; the one of two days ago before it
    expect(examples(impact, 'now_denied')).toEqual([ids.aliceRead, ids.aliceDefaults, ids.aliceWrite, oneDay].sort());
    expect(examples(impact, 'now_denied')).not.toContain(twoDays);
    // the audience was recorded as an alias: the target is still the Resource AS
    expect(impact.by_target.every((t: { audience: string }) => t.audience === TODO_AS)).toBe(true);
    const after = impact.examples.find((e: { id: string }) => e.id === oneDay).after;
    expect(after).toMatchObject({ decision: 'denied', reason: 'rule_expired' });
    await idjag.database.db.deleteFrom('audit_log').where('id', 'in', [twoDays, oneDay]).execute();
  });

  test('drift: once alice leaves engineering, her recorded exchanges no longer replay as recorded', async () => {
    expect((await api.patch('/users/alice', { groups: [] })).status).toBe(200);
    try {
      const { impact } = (await api.post('/rules/engineering-todo/disable?impact=preview')).body;
      // her four exchanges (two rules) drifted; both sides see her groups as they are now, so disabling the rule changes nothing for her any more
      expect(impact.drifted).toBe(4);
      expect(nonZero(impact)).toEqual({ unchanged: 5 });
    } finally {
      await api.patch('/users/alice', { groups: ['engineering'] });
    }
  });
});

describe('the cap', () => {
  let capped: TestServer;
  afterAll(() => capped?.dispose());

  test('over the configured number of decisions, only the newest are replayed and the summary says the cap was hit', async () => {
    capped = await startTestServer({ impactMaxRows: 100, impactDays: 2 });
    const cappedApi = await connectAdmin(capped.url);
    const sub = (await capped.database.db.selectFrom('users').select('sub').where('username', '=', 'alice').executeTakeFirstOrThrow()).sub;
    for (let i = 0; i < 120; i++) {
      await recordOutcome(capped.database.db, {
        requestId: `cap-${i}`, decision: 'issued', reason: 'issued', explanation: 'allowed', clientId: 'demo-agent', sub, username: 'alice',
        audience: TODO_AS, resources: [TODO_MCP], scopesGranted: ['todos.read', 'todos.write'], ruleIds: ['engineering-todo'], checks: [],
      }, Date.now() - (i + 1) * 60_000);
    }
    const { impact } = (await cappedApi.post('/rules/engineering-todo/disable?impact=preview')).body;
    expect(impact).toMatchObject({ replayed: 100, max_rows: 100, capped: true, counts: { now_denied: 100 }, window: { days: 2 } });
    expect(impact.examples.filter((e: { kind: string }) => e.kind === 'now_denied')).toHaveLength(5);
  });
});
