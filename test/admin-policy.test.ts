import { signIn } from './helpers/browser.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { exchange, TODO_ADMIN_MCP, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { auditCount as countAudit } from './helpers/audit.ts';

let idjag: TestServer;
let api: AdminClient;

beforeAll(async () => {
  idjag = await startTestServer();
  api = await connectAdmin(idjag.url);
});
afterAll(() => idjag.dispose());

const auditCount = () => countAudit(idjag);
const changesFor = (entityId: string) => idjag.database.db.selectFrom('admin_changes').selectAll().where('entity_id', '=', entityId).orderBy('at').orderBy('id').execute();

const adminRule = {
  id: 'sales-todo-admin',
  description: 'sales may administer todos',
  client_id: 'demo-agent',
  audience: TODO_AS,
  resource: TODO_ADMIN_MCP,
  who: { groups: ['sales'] },
  scopes: ['todos.admin'],
  default_scopes: ['todos.admin'],
  rs_client_id: 'agent-at-todo-admin',
  lifetime: 120,
};

describe('rules: CRUD over HTTP, each change in the change log', () => {
  test('create, read, list with filters, edit the Resource-AS client id, disable, enable, delete', async () => {
    const created = await api.post('/rules', adminRule);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ ...adminRule, enabled: true, created_by: 'client:idjag-admin-cli', mcp_server_id: expect.any(String) });

    expect((await api.get('/rules/sales-todo-admin')).body.rs_client_id).toBe('agent-at-todo-admin');

    const ids = async (query: string) => ((await api.get(`/rules${query}`)).body.items as { id: string }[]).map((r) => r.id);
    expect(await ids('')).toEqual(expect.arrayContaining(['engineering-todo', 'sales-todo-admin']));
    expect(await ids('?group=sales')).toEqual(['sales-todo-admin']);
    expect(await ids('?group=engineering')).toContain('engineering-todo');
    expect(await ids('?group=engineering')).not.toContain('sales-todo-admin');
    // group names are case-sensitive (two groups may differ by case only): the same answer on both dialects
    expect(await ids('?group=SALES')).toEqual([]);
    expect(await ids(`?resource=${encodeURIComponent(TODO_ADMIN_MCP)}`)).toEqual(['sales-todo-admin']);
    expect(await ids(`?resource=${encodeURIComponent(TODO_MCP)}`)).toEqual(['engineering-todo']);
    expect(await ids('?client_id=partner-app')).toEqual([]);
    expect(await ids('?client_id=demo-agent&group=sales')).toEqual(['sales-todo-admin']);
    // keyset pages in id order
    const first = await api.get('/rules?limit=1');
    expect(first.body.items).toHaveLength(1);
    expect(first.body.next).toBe(first.body.items[0].id);
    const second = await api.get(`/rules?limit=1&after=${first.body.next}`);
    expect(second.body.items[0].id > first.body.items[0].id).toBe(true);

    const edited = await api.patch('/rules/sales-todo-admin', { rs_client_id: 'renamed-at-todo', lifetime: 60 });
    expect(edited.status).toBe(200);
    expect(edited.body).toMatchObject({ rs_client_id: 'renamed-at-todo', lifetime: 60, description: 'sales may administer todos' });
    expect((await api.patch('/rules/sales-todo-admin', { description: null })).body.description).toBeUndefined();

    expect((await api.post('/rules/sales-todo-admin/disable')).body.enabled).toBe(false);
    expect(await ids('?enabled=false')).toEqual(['sales-todo-admin']);
    expect((await api.post('/rules/sales-todo-admin/enable')).body.enabled).toBe(true);

    expect((await api.delete('/rules/sales-todo-admin')).status).toBe(204);
    expect((await api.get('/rules/sales-todo-admin')).status).toBe(404);
    expect((await api.delete('/rules/sales-todo-admin')).status).toBe(404);

    const log = await changesFor('sales-todo-admin');
    expect(log.map((c) => c.action)).toEqual(['create', 'update', 'update', 'disable', 'enable', 'delete']);
    expect(log.every((c) => c.actor === 'client:idjag-admin-cli' && c.entity === 'rule')).toBe(true);
    const update = log[1]!;
    expect(JSON.parse(update.before!)).toMatchObject({ rs_client_id: 'agent-at-todo-admin', lifetime: 120 });
    expect(JSON.parse(update.after!)).toMatchObject({ rs_client_id: 'renamed-at-todo', lifetime: 60 });
    expect(log[0]!.before).toBeNull();
    expect(log.at(-1)!.after).toBeNull();
    expect(JSON.parse(log.at(-1)!.before!)).toMatchObject({ id: 'sales-todo-admin', who: { groups: ['sales'] } });

    // the change log reads back through the API too, newest first
    const feed = await api.get('/changes?entity=rule&entity_id=sales-todo-admin&limit=2');
    expect(feed.body.items.map((c: { action: string }) => c.action)).toEqual(['delete', 'enable']);
    const rest = await api.get(`/changes?entity=rule&entity_id=sales-todo-admin&cursor=${feed.body.next_cursor}`);
    expect(rest.body.items.map((c: { action: string }) => c.action)).toEqual(['disable', 'update', 'update', 'create']);
  });

  test('a rule change takes effect at the token endpoint: disabling engineering-todo denies alice', async () => {
    const alice = await signIn(idjag.url);
    expect((await exchange(idjag.url, alice.tokens.id_token)).status).toBe(200);
    await api.post('/rules/engineering-todo/disable');
    try {
      const denied = await exchange(idjag.url, alice.tokens.id_token);
      expect(denied.status).toBe(400);
      expect(denied.body.error).toBe('invalid_target');
    } finally {
      await api.post('/rules/engineering-todo/enable');
    }
    expect((await exchange(idjag.url, alice.tokens.id_token)).status).toBe(200);
  });

  test('validation: unknown client, scope the MCP server does not define, lifetime out of range, duplicate, each at its field', async () => {
    const bad = async (body: unknown) => {
      const res = await api.post('/rules', body);
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('invalid_request');
      return res.body.issues as { path: (string | number)[]; message: string }[];
    };
    expect(await bad({ ...adminRule, client_id: 'nobody' })).toEqual([{ path: ['client_id'], message: 'unknown client nobody' }]);
    expect(await bad({ ...adminRule, scopes: ['todos.admin', 'todos.read'] })).toEqual([
      { path: ['scopes', 1], message: `todos.read is not defined by ${TODO_ADMIN_MCP} (it defines todos.admin)` },
    ]);
    expect(await bad({ ...adminRule, lifetime: 3601 })).toEqual([{ path: ['lifetime'], message: 'at most 3600 s' }]);
    expect(await bad({ ...adminRule, lifetime: 0 })).toEqual([{ path: ['lifetime'], message: 'at least 1 s' }]);
    expect((await bad({ ...adminRule, default_scopes: ['todos.read'], scopes: ['todos.admin'] }))[0]!.path).toEqual(['default_scopes']);
    expect(await bad({ ...adminRule, id: 'another-name', resource: TODO_MCP, scopes: ['todos.read'], default_scopes: [], who: { groups: ['engineering'] } })).toEqual([
      { path: ['who'], message: 'duplicate of rule engineering-todo: same client, target and subjects; edit that rule instead' },
    ]);
    expect(await bad({ ...adminRule, id: 'engineering-todo' })).toEqual([{ path: ['id'], message: 'rule engineering-todo already exists' }]);
    expect(await bad({ ...adminRule, audience: 'https://unknown.example' })).toEqual([{ path: ['audience'], message: 'unknown Resource AS https://unknown.example' }]);
    expect(await bad({ ...adminRule, who: { groups: ['nope'] } })).toEqual([{ path: ['who', 'groups', 0], message: 'unknown group nope' }]);
    expect(await bad({ ...adminRule, who: { users: ['ghost'] } })).toEqual([{ path: ['who', 'users', 0], message: 'unknown user ghost' }]);
    // zod at the boundary: unknown fields and wrong types are named too
    const shape = await bad({ ...adminRule, lifetime: '300', colour: 'red' });
    expect(shape.map((i) => i.path)).toEqual(expect.arrayContaining([['lifetime'], []]));
    expect(shape.find((i) => i.path.length === 0)!.message).toMatch(/colour/);
    // several problems at once are all reported
    expect((await bad({ ...adminRule, client_id: 'nobody', scopes: ['todos.read'], default_scopes: [] })).map((i) => i.path)).toEqual([['client_id'], ['scopes', 0]]);

    // an edit is validated whole, and a refused edit changes nothing
    const narrowed = await api.patch('/rules/engineering-todo', { scopes: ['todos.read'] });
    expect(narrowed.status).toBe(400);
    expect(narrowed.body.issues).toEqual([{ path: ['default_scopes'], message: 'default_scopes must be a subset of scopes' }]);
    const res = await api.patch('/rules/engineering-todo', { scopes: ['todos.read', 'todos.admin'], default_scopes: ['todos.read'] });
    expect(res.status).toBe(400);
    expect(res.body.issues).toEqual([{ path: ['scopes', 1], message: `todos.admin is not defined by ${TODO_MCP} (it defines todos.read todos.write)` }]);
    expect((await api.get('/rules/engineering-todo')).body.scopes).toEqual(['todos.read', 'todos.write']);
    expect((await api.patch('/rules/nope', { lifetime: 10 })).status).toBe(404);
  });

  test('a rule naming users reads back by username; the user cannot be deleted while named', async () => {
    const res = await api.post('/rules', { client_id: 'demo-agent', audience: 'urn:example:todo', resource: TODO_ADMIN_MCP, who: { users: ['bob'] }, scopes: ['todos.admin'] });
    expect(res.status).toBe(201);
    // derived id, alias resolved to the issuer, defaults filled
    expect(res.body).toMatchObject({ id: expect.stringMatching(/^rule-/), audience: TODO_AS, who: { users: ['bob'] }, lifetime: 300, default_scopes: [] });
    const row = await idjag.database.db.selectFrom('policy_rules').select('subjects').where('id', '=', res.body.id).executeTakeFirstOrThrow();
    expect(JSON.parse(row.subjects)[0]).toMatch(/^[0-9a-f-]{36}$/);
    const del = await api.delete('/users/bob');
    expect(del.status).toBe(409);
    expect(del.body.error_description).toContain(res.body.id);
    expect((await api.delete(`/rules/${res.body.id}`)).status).toBe(204);
  });
});

describe('simulator: the token endpoint\'s decision, without issuing or auditing anything', () => {
  test('alice through demo-agent: issued, with the scopes, the rule and the ID-JAG it would be', async () => {
    const before = await auditCount();
    const res = await api.post('/simulate', { client_id: 'demo-agent', user: 'alice', audience: TODO_AS, resource: TODO_MCP, scope: 'todos.read' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      decision: 'issued', reason: 'issued', scopes: ['todos.read'], rule_ids: ['engineering-todo'],
      id_jag: { aud: TODO_AS, client_id: 'demo-agent-at-todo', resource: TODO_MCP, scope: 'todos.read', expires_in: 300 },
    });
    expect(res.body.checks.every((c: { status: string }) => c.status === 'passed')).toBe(true);
    expect(res.body.checks.map((c: { name: string }) => c.name)).toEqual(['client_authentication', 'confidential_client', 'grant_type_allowed', 'user', 'audience', 'resource', 'policy', 'scope', 'step_up']);
    expect(await auditCount()).toBe(before);
  });

  test('bob: denied like the token endpoint denies him, with the reasoning the client never sees', async () => {
    const before = await auditCount();
    const res = await api.post('/simulate', { client_id: 'demo-agent', user: 'bob', audience: TODO_AS, resource: TODO_MCP });
    expect(res.body).toMatchObject({ decision: 'denied', reason: 'subject_not_allowed', error: 'invalid_target', rule_ids: ['engineering-todo'] });
    expect(res.body.explanation).toContain('engineering-todo');
    expect(res.body.error_description).not.toContain('engineering');
    const policy = res.body.checks.find((c: { name: string }) => c.name === 'policy');
    expect(policy).toMatchObject({ status: 'failed', error: 'invalid_target', section: expect.stringContaining('RFC 8693 §2.2.2') });
    expect(res.body.checks.find((c: { name: string }) => c.name === 'scope').status).toBe('not_reached');
    expect(await auditCount()).toBe(before);

    // and the real exchange agrees
    const bobSession = await signIn(idjag.url, { username: 'bob', password: 'bob' });
    const real = await exchange(idjag.url, bobSession.tokens.id_token);
    expect(real.body.error).toBe(res.body.error);
    const row = await idjag.database.db.selectFrom('audit_log').select(['reason', 'explanation']).orderBy('at', 'desc').orderBy('id', 'desc').executeTakeFirstOrThrow();
    expect(row).toEqual({ reason: res.body.reason, explanation: res.body.explanation });
  });

  test('target, scope, client and step-up outcomes', async () => {
    const sim = async (over: Record<string, unknown>) => (await api.post('/simulate', { client_id: 'demo-agent', user: 'alice', audience: TODO_AS, resource: TODO_MCP, ...over })).body;
    expect(await sim({ resource: TODO_ADMIN_MCP })).toMatchObject({ decision: 'denied', reason: 'no_rule', error: 'invalid_target' });
    expect(await sim({ audience: 'https://nowhere.example' })).toMatchObject({ decision: 'denied', reason: 'audience', error: 'invalid_target' });
    expect(await sim({ scope: ['todos.delete'] })).toMatchObject({ decision: 'denied', reason: 'scope_not_allowed', error: 'invalid_scope' });
    expect(await sim({ client_id: 'demo-public' })).toMatchObject({ decision: 'denied', reason: 'confidential_client', error: 'unauthorized_client' });
    expect(await sim({ client_id: 'partner-app' })).toMatchObject({ decision: 'denied', reason: 'grant_type_allowed', error: 'unauthorized_client' });
    expect(await sim({ audience: 'urn:example:todo' })).toMatchObject({ decision: 'issued', id_jag: { aud: TODO_AS } });

    await api.patch('/rules/engineering-todo', { max_auth_age: 600 });
    try {
      expect(await sim({ auth_age: 60 })).toMatchObject({ decision: 'issued' });
      expect(await sim({ auth_age: 601 })).toMatchObject({ decision: 'denied', reason: 'step_up_required', error: 'insufficient_user_authentication', max_age: 600 });
    } finally {
      await api.patch('/rules/engineering-todo', { max_auth_age: null });
    }
    const unknown = await api.post('/simulate', { client_id: 'demo-agent', user: 'nobody', audience: TODO_AS });
    expect(unknown.status).toBe(400);
    expect(unknown.body.issues).toEqual([{ path: ['user'], message: 'unknown user nobody' }]);
  });
});
