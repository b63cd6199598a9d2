import { authorize, REDIRECT_URI, signIn, tokenRequest } from './helpers/browser.ts';
import { clientToken, connectAdmin, type AdminClient } from './helpers/admin.ts';
import { exchange, TODO_AS } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let api: AdminClient;

beforeAll(async () => {
  idjag = await startTestServer();
  api = await connectAdmin(idjag.url);
});
afterAll(() => idjag.dispose());

/** The API's changes to one entity (the seed's own creations are left out), oldest first. */
const changes = (entity: string, entityId: string) => idjag.database.db.selectFrom('admin_changes').selectAll()
  .where('entity', '=', entity).where('entity_id', '=', entityId).where('actor', '!=', 'seed').orderBy('at').orderBy('id').execute();

describe('clients', () => {
  test('a confidential client: the secret is shown once at creation, works at /token, rotates, and never reaches the change log', async () => {
    const res = await api.post('/clients', {
      client_id: 'reporting-job', client_name: 'Reporting job', type: 'confidential',
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ client_id: 'reporting-job', type: 'confidential', token_endpoint_auth_method: 'client_secret_basic', has_secret: true, first_party: false, disabled: false });
    const secret = res.body.client_secret as string;
    expect(secret.length).toBeGreaterThanOrEqual(32);

    const read = await api.get('/clients/reporting-job');
    expect(read.body.client_secret).toBeUndefined();
    expect(read.text).not.toContain(secret);
    expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials' }, { id: 'reporting-job', secret })).status).toBe(200);

    const rotated = await api.post('/clients/reporting-job/rotate-secret');
    expect(rotated.status).toBe(200);
    expect(rotated.body.client_secret).not.toBe(secret);
    expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials' }, { id: 'reporting-job', secret })).status).toBe(401);
    expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials' }, { id: 'reporting-job', secret: rotated.body.client_secret })).status).toBe(200);

    const log = await changes('client', 'reporting-job');
    expect(log.map((c) => c.action)).toEqual(['create', 'rotate_secret']);
    const all = JSON.stringify(log);
    expect(all).not.toContain(secret);
    expect(all).not.toContain(rotated.body.client_secret);
    expect(all).not.toMatch(/scrypt\$/);
  });

  test('a public client signs users in with PKCE and has no secret; it may not take client_credentials or admin', async () => {
    const res = await api.post('/clients', {
      client_id: 'spa', type: 'public', first_party: true, redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], response_types: ['code'],
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ type: 'public', token_endpoint_auth_method: 'none', has_secret: false });
    expect(res.body.client_secret).toBeUndefined();
    const { code } = await authorize(idjag.url, { clientId: 'spa' });
    expect(code).toEqual(expect.any(String));

    const cc = await api.post('/clients', { client_id: 'bad-public', type: 'public', grant_types: ['client_credentials'], response_types: [], redirect_uris: [] });
    expect(cc.status).toBe(400);
    expect(cc.body.issues).toEqual([{ path: ['grant_types', 0], message: 'a public client (token_endpoint_auth_method none) cannot use client_credentials' }]);
    const admin = await api.patch('/clients/spa', { scope: 'openid admin' });
    expect(admin.status).toBe(400);
    expect(admin.body.issues[0].path).toEqual(['scope']);
  });

  test('the provider\'s own metadata checks come back as field errors', async () => {
    const noRedirect = await api.post('/clients', { client_id: 'web-app', grant_types: ['authorization_code'] });
    expect(noRedirect.status).toBe(400);
    expect(noRedirect.body.issues).toEqual([{ path: ['redirect_uris'], message: 'redirect_uris is mandatory property' }]);
    const badScope = await api.post('/clients', { client_id: 'web-app', redirect_uris: [REDIRECT_URI], scope: 'openid superpowers' });
    expect(badScope.body.issues).toEqual([{ path: ['scope'], message: 'scope must only contain Authorization Server supported scope values' }]);
    const fragment = await api.post('/clients', { client_id: 'web-app', redirect_uris: ['https://app.example/cb#x'] });
    expect(fragment.body.issues[0].path).toEqual(['redirect_uris']);
    const mismatch = await api.post('/clients', { client_id: 'web-app', type: 'public', token_endpoint_auth_method: 'client_secret_basic', redirect_uris: [REDIRECT_URI] });
    expect(mismatch.body.issues).toEqual([{ path: ['token_endpoint_auth_method'], message: 'a public client cannot use client_secret_basic' }]);
    expect((await api.get('/clients/web-app')).status).toBe(404);
    expect((await api.post('/clients', { client_id: 'demo-agent', redirect_uris: [REDIRECT_URI] })).body.issues).toEqual([{ path: ['client_id'], message: 'client demo-agent already exists' }]);
  });

  test('edit redirect URIs, first-party flag and grant types; disable; delete refused while rules name it', async () => {
    const created = await api.post('/clients', { client_id: 'agent-2', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'] });
    expect(created.status).toBe(201);
    const edited = await api.patch('/clients/agent-2', {
      redirect_uris: [REDIRECT_URI, 'http://127.0.0.1:8977/cb'], first_party: true,
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:token-exchange'],
    });
    expect(edited.status).toBe(200);
    expect(edited.body).toMatchObject({ first_party: true, redirect_uris: [REDIRECT_URI, 'http://127.0.0.1:8977/cb'] });
    expect(edited.body.grant_types).toContain('urn:ietf:params:oauth:grant-type:token-exchange');

    // the listing never carries a secret
    const list = await api.get('/clients');
    expect(list.body.items.map((c: { client_id: string }) => c.client_id)).toEqual(expect.arrayContaining(['agent-2', 'demo-agent', 'idjag-admin-cli']));
    expect(list.text).not.toMatch(/client_secret"|scrypt/);

    const disabled = await api.post('/clients/demo-agent/disable');
    expect(disabled.body.disabled).toBe(true);
    expect((await tokenRequest(idjag.url, { grant_type: 'refresh_token', refresh_token: 'x' }, { id: 'demo-agent', secret: 'demo-agent-secret' })).status).toBe(401);
    expect((await api.post('/clients/demo-agent/enable')).body.disabled).toBe(false);
    expect((await changes('client', 'demo-agent')).map((c) => c.action).slice(-2)).toEqual(['disable', 'enable']);

    const refused = await api.delete('/clients/demo-agent');
    expect(refused.status).toBe(409);
    expect(refused.body).toMatchObject({ error: 'conflict', error_description: expect.stringContaining('engineering-todo') });
    expect((await api.delete('/clients/agent-2')).status).toBe(204);
    expect((await api.get('/clients/agent-2')).status).toBe(404);
  });
});

describe('Resource authorization servers and MCP servers', () => {
  test('create an AS with an MCP server, add another, edit scopes, delete, with rules keeping them consistent', async () => {
    const rs = await api.post('/resource-servers', {
      issuer: 'https://auth.notes.example', name: 'Notes AS', aliases: ['urn:example:notes'],
      mcp_servers: [{ resource: 'https://mcp.notes.example/mcp', name: 'Notes', scopes: ['notes.read', 'notes.write'] }],
    });
    expect(rs.status).toBe(201);
    expect(rs.body).toMatchObject({ issuer: 'https://auth.notes.example', aliases: ['urn:example:notes'], enabled: true, mcp_servers: [{ resource: 'https://mcp.notes.example/mcp', scopes: ['notes.read', 'notes.write'] }] });
    const rsId = rs.body.id as string;

    const mcp = await api.post(`/resource-servers/${rsId}/mcp-servers`, { resource: 'https://mcp.notes.example/admin', name: 'Notes admin', scopes: ['notes.admin'] });
    expect(mcp.status).toBe(201);
    expect((await api.get(`/resource-servers/${rsId}`)).body.mcp_servers).toHaveLength(2);

    const rule = await api.post('/rules', { id: 'notes', client_id: 'demo-agent', audience: 'urn:example:notes', resource: 'https://mcp.notes.example/mcp', who: 'everyone', scopes: ['notes.read'] });
    expect(rule.status).toBe(201);
    const notesMcpId = rule.body.mcp_server_id as string;

    // a scope a rule allows cannot disappear from under it
    const drop = await api.patch(`/mcp-servers/${notesMcpId}`, { scopes: ['notes.write'] });
    expect(drop.status).toBe(400);
    expect(drop.body.issues[0]).toMatchObject({ path: ['scopes'], message: expect.stringContaining('rule notes allows notes.read') });
    const add = await api.patch(`/mcp-servers/${notesMcpId}`, { scopes: ['notes.read', 'notes.write', 'notes.share'], name: 'Notes (v2)' });
    expect(add.body).toMatchObject({ name: 'Notes (v2)', scopes: ['notes.read', 'notes.write', 'notes.share'] });
    expect((await api.patch(`/mcp-servers/${notesMcpId}`, { enabled: false })).body.enabled).toBe(false);
    expect((await changes('mcp_server', 'https://mcp.notes.example/mcp')).map((c) => c.action)).toEqual(['create', 'update', 'disable']);

    // an audience names one AS only
    const clash = await api.patch(`/resource-servers/${rsId}`, { aliases: ['urn:example:todo'] });
    expect(clash.status).toBe(400);
    expect(clash.body.issues).toEqual([{ path: ['aliases', 0], message: 'urn:example:todo already names another Resource AS' }]);
    expect((await api.patch(`/resource-servers/${rsId}`, { name: 'Notes authorization server' })).body.name).toBe('Notes authorization server');

    expect((await api.delete(`/mcp-servers/${notesMcpId}`)).status).toBe(409);
    expect((await api.delete(`/resource-servers/${rsId}`)).status).toBe(409);
    expect((await api.delete('/rules/notes')).status).toBe(204);
    expect((await api.delete(`/mcp-servers/${mcp.body.id}`)).status).toBe(204);
    expect((await api.delete(`/resource-servers/${rsId}`)).status).toBe(204);
    expect((await api.get(`/resource-servers/${rsId}`)).status).toBe(404);
    expect((await changes('mcp_server', 'https://mcp.notes.example/mcp')).at(-1)!.action).toBe('delete');
    expect((await changes('resource_server', 'https://auth.notes.example')).map((c) => c.action)).toEqual(['create', 'update', 'delete']);

    const list = await api.get('/resource-servers');
    expect(list.body.items.map((s: { issuer: string }) => s.issuer)).toContain(TODO_AS);
    expect(list.body.items.map((s: { issuer: string }) => s.issuer)).not.toContain('https://auth.notes.example');
  });

  test('validation: bad URIs, bad scope tokens, an existing issuer', async () => {
    const res = await api.post('/resource-servers', { issuer: 'not a uri', name: '', mcp_servers: [{ resource: 'https://x.example/#frag', name: 'x', scopes: ['has space'] }] });
    expect(res.status).toBe(400);
    expect(res.body.issues.map((i: { path: unknown[] }) => i.path)).toEqual(expect.arrayContaining([
      ['issuer'], ['name'], ['mcp_servers', 0, 'resource'], ['mcp_servers', 0, 'scopes', 0],
    ]));
    const dup = await api.post('/resource-servers', { issuer: TODO_AS, name: 'again' });
    expect(dup.body.issues).toEqual([{ path: ['issuer'], message: `Resource AS ${TODO_AS} already exists` }]);
  });
});

describe('users and groups', () => {
  test('create a user with a password, sign in, disable (no more sign-in or ID-JAG), reset the password, delete', async () => {
    const created = await api.post('/users', { username: 'carol', password: 'carol-password-1', email: 'carol@example.com', name: 'Carol', groups: ['engineering'] });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ username: 'carol', sub: expect.any(String), email: 'carol@example.com', email_verified: true, groups: ['engineering'], has_password: true, disabled: false });
    expect(created.text).not.toMatch(/carol-password-1|scrypt/);

    const carol = await signIn(idjag.url, { username: 'carol', password: 'carol-password-1' });
    expect((await exchange(idjag.url, carol.tokens.id_token)).status).toBe(200);

    expect((await api.post('/users/carol/disable')).body.disabled).toBe(true);
    const denied = await exchange(idjag.url, carol.tokens.id_token);
    expect(denied.body.error).toBe('invalid_grant');
    await expect(signIn(idjag.url, { username: 'carol', password: 'carol-password-1' })).rejects.toThrow(/login refused/);
    expect((await api.post('/users/carol/enable')).body.disabled).toBe(false);

    const reset = await api.post('/users/carol/reset-password', {});
    expect(reset.status).toBe(200);
    expect(reset.body.password).toEqual(expect.any(String));
    await expect(signIn(idjag.url, { username: 'carol', password: 'carol-password-1' })).rejects.toThrow(/login refused/);
    expect((await signIn(idjag.url, { username: 'carol', password: reset.body.password })).tokens.id_token).toEqual(expect.any(String));
    const chosen = await api.post('/users/carol/reset-password', { password: 'short' });
    expect(chosen.status).toBe(400);
    expect(chosen.body.issues).toEqual([{ path: ['password'], message: 'at least 8 characters' }]);

    const edited = await api.patch('/users/carol', { name: 'Carol C.', email: null });
    expect(edited.body).toMatchObject({ name: 'Carol C.' });
    expect(edited.body.email).toBeUndefined();

    const log = await changes('user', 'carol');
    expect(log.map((c) => c.action)).toEqual(['create', 'disable', 'enable', 'reset_password', 'update']);
    expect(JSON.stringify(log)).not.toMatch(/\\"password\\"|scrypt|carol-password-1/);

    expect((await api.delete('/users/carol')).status).toBe(204);
    expect((await api.get('/users/carol')).status).toBe(404);
  });

  test('list users with filters and pages', async () => {
    const all = await api.get('/users');
    expect(all.body.items.map((u: { username: string }) => u.username)).toEqual(['admin', 'alice', 'bob']);
    expect((await api.get('/users?group=sales')).body.items.map((u: { username: string }) => u.username)).toEqual(['bob']);
    expect((await api.get('/users?q=anderson')).body.items.map((u: { username: string }) => u.username)).toEqual(['alice']);
    // the search ignores case on both dialects (SQLite's LIKE does, PostgreSQL's does not)
    expect((await api.get('/users?q=ANDERSON')).body.items.map((u: { username: string }) => u.username)).toEqual(['alice']);
    const page = await api.get('/users?limit=2');
    expect(page.body.next).toBe('alice');
    expect((await api.get('/users?limit=2&after=alice')).body.items.map((u: { username: string }) => u.username)).toEqual(['bob']);
    expect((await api.get('/users?limit=0')).status).toBe(400);
    expect((await api.post('/users', { username: 'has space' })).body.issues[0].path).toEqual(['username']);
    expect((await api.post('/users', { username: 'alice' })).body.issues).toEqual([{ path: ['username'], message: 'user alice already exists' }]);
  });

  test('groups: create, membership (add, remove, set), and a rule on the group follows the membership', async () => {
    const g = await api.post('/groups', { name: 'support', description: 'Support team' });
    expect(g.status).toBe(201);
    expect(g.body).toEqual({ name: 'support', description: 'Support team', members: [] });
    expect((await api.post('/groups/support/members', { username: 'bob' })).body.members).toEqual(['bob']);
    expect((await api.get('/users/bob')).body.groups).toEqual(['sales', 'support']);

    const rule = await api.post('/rules', { id: 'support-todo', client_id: 'demo-agent', audience: TODO_AS, resource: 'https://mcp.todo.example/mcp', who: { groups: ['support'] }, scopes: ['todos.read'], default_scopes: ['todos.read'] });
    expect(rule.status).toBe(201);
    const sim = () => api.post('/simulate', { client_id: 'demo-agent', user: 'bob', audience: TODO_AS, resource: 'https://mcp.todo.example/mcp' });
    expect((await sim()).body).toMatchObject({ decision: 'issued', rule_ids: ['support-todo'], scopes: ['todos.read'] });

    expect((await api.delete('/groups/support/members/bob')).body.members).toEqual([]);
    expect((await sim()).body.decision).toBe('denied');
    expect((await api.delete('/groups/support/members/bob')).status).toBe(404);

    const set = await api.put('/groups/support/members', { usernames: ['alice', 'bob'] });
    expect(set.body.members).toEqual(['alice', 'bob']);
    const bad = await api.put('/groups/support/members', { usernames: ['alice', 'ghost'] });
    expect(bad.status).toBe(400);
    expect(bad.body.issues).toEqual([{ path: ['usernames', 1], message: 'unknown user ghost' }]);
    // all or nothing: the refused set changed nobody
    expect((await api.get('/groups/support')).body.members).toEqual(['alice', 'bob']);
    expect((await api.put('/groups/support/members', { usernames: ['alice'] })).body.members).toEqual(['alice']);
    // membership changes are recorded on the users, as the document states them
    const bobLog = await changes('user', 'bob');
    expect(bobLog.map((c) => [JSON.parse(c.before!).groups, JSON.parse(c.after!).groups])).toEqual([
      [['sales'], ['sales', 'support']], [['sales', 'support'], ['sales']], [['sales'], ['sales', 'support']], [['sales', 'support'], ['sales']],
    ]);

    expect((await api.patch('/groups/support', { description: 'Support' })).body.description).toBe('Support');
    expect((await api.delete('/groups/support')).status).toBe(409);
    await api.delete('/rules/support-todo');
    expect((await api.delete('/groups/support')).status).toBe(204);
    expect((await api.get('/users/alice')).body.groups).toEqual(['engineering']);
    expect((await changes('group', 'support')).map((c) => c.action)).toEqual(['create', 'update', 'delete']);
    expect((await api.get('/groups')).body.items.map((x: { name: string }) => x.name)).toEqual(['admins', 'engineering', 'sales']);
  });
});

test('bad input: invalid JSON, another content type, a body too large', async () => {
  const token = await clientToken(idjag.url);
  const post = (body: string, type: string) => fetch(`${idjag.url}/admin/api/groups`, { method: 'POST', body, headers: { authorization: `Bearer ${token}`, 'content-type': type } });
  const broken = await post('{"name": ', 'application/json');
  expect(broken.status).toBe(400);
  expect(await broken.json()).toMatchObject({ error: 'invalid_request' });
  const form = await post('name=x', 'application/x-www-form-urlencoded');
  expect(form.status).toBe(415);
  const huge = await post(JSON.stringify({ name: 'x', description: 'y'.repeat(100_000) }), 'application/json');
  expect(huge.status).toBe(413);
  const array = await post('[]', 'application/json');
  expect(array.status).toBe(400);
  expect((await array.json() as { issues: unknown[] }).issues).toHaveLength(1);
});
