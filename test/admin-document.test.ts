import { applyDocument, exportDocument, parseDocument } from '../src/admin/document.ts';
import { migrateToLatest, openDatabase } from '../src/db/index.ts';
import { tokenRequest } from './helpers/browser.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { createTestDatabase } from './helpers/database.ts';
import { TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let api: AdminClient;

beforeAll(async () => {
  idjag = await startTestServer();
  api = await connectAdmin(idjag.url);
  // something beyond the seed: a rule naming a user, a disabled client, an alias, a user without a password
  expect((await api.post('/users', { username: 'dave', email: 'dave@example.com', groups: ['sales', 'oncall'] })).status).toBe(201);
  expect((await api.post('/rules', { id: 'dave-admin', client_id: 'demo-agent', audience: TODO_AS, resource: 'https://mcp.todo.example/admin', who: { users: ['dave'] }, scopes: ['todos.admin'], max_auth_age: 900, enabled: false })).status).toBe(201);
  expect((await api.post('/clients', { client_id: 'old-app', redirect_uris: ['https://old.example/cb'], disabled: true })).status).toBe(201);
});
afterAll(() => idjag.dispose());

const changeCount = async () => Number((await idjag.database.db.selectFrom('admin_changes').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

test('export: the whole configuration as one document, without secrets or password hashes', async () => {
  const res = await api.get('/export');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-disposition')).toBe('attachment; filename="idjag-config.json"');
  const doc = res.body;
  expect(Object.keys(doc)).toEqual(['groups', 'users', 'clients', 'resource_servers', 'rules']);
  expect(doc.groups.map((g: { name: string }) => g.name)).toEqual(['admins', 'engineering', 'oncall', 'sales']);
  expect(doc.users.find((u: { username: string }) => u.username === 'dave')).toEqual({ username: 'dave', sub: expect.any(String), email: 'dave@example.com', email_verified: true, disabled: false, groups: ['oncall', 'sales'] });
  expect(doc.clients.find((c: { client_id: string }) => c.client_id === 'idjag-admin-cli')).toMatchObject({ grant_types: ['client_credentials'], scope: 'admin', disabled: false });
  expect(doc.resource_servers.find((r: { issuer: string }) => r.issuer === TODO_AS)).toMatchObject({ aliases: ['urn:example:todo'], enabled: true, mcp_servers: expect.arrayContaining([{ resource: TODO_MCP, name: 'Todo MCP server', scopes: ['todos.read', 'todos.write'], enabled: true }]) });
  expect(doc.rules.find((r: { id: string }) => r.id === 'dave-admin')).toEqual({
    id: 'dave-admin', client_id: 'demo-agent', audience: TODO_AS, resource: 'https://mcp.todo.example/admin', who: { users: ['dave'] },
    scopes: ['todos.admin'], default_scopes: [], lifetime: 300, max_auth_age: 900, enabled: false,
  });
  expect(res.text).not.toMatch(/secret"|password|scrypt/);
  // the seed/ format and this one are the same
  expect(() => parseDocument(doc)).not.toThrow();
});

test('round trip: an export applied to an empty database gives back the same export; applied to its own, changes nothing', async () => {
  const original = (await api.get('/export')).body;
  const scratch = await createTestDatabase('idjag-roundtrip');
  const fresh = openDatabase(scratch.location);
  try {
    await migrateToLatest(fresh.db);
    const created = await applyDocument(fresh.db, parseDocument(original), 'import-test');
    expect(created.every((c) => c.action === 'create')).toBe(true);
    expect(await exportDocument(fresh.db)).toEqual(original);
    // the same subs: tokens and rules keep naming the same people
    const dave = await fresh.db.selectFrom('users').select(['sub', 'password_hash']).where('username', '=', 'dave').executeTakeFirstOrThrow();
    expect(dave.sub).toBe(original.users.find((u: { username: string }) => u.username === 'dave').sub);
    expect(await applyDocument(fresh.db, parseDocument(original), 'import-test')).toEqual([]);
  } finally {
    await fresh.close();
    await scratch.dispose();
  }
  const before = await changeCount();
  const again = await api.post('/import', original);
  expect(again.status).toBe(200);
  expect(again.body).toEqual({ dry_run: false, applied: true, summary: {}, changes: [] });
  expect(await changeCount()).toBe(before);
  // secrets and passwords survived (an export carries none, and an omitted one is kept)
  expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, { id: 'idjag-admin-cli', secret: 'idjag-admin-cli-secret' })).status).toBe(200);
});

const edit = {
  groups: [{ name: 'contractors', description: 'External people' }],
  clients: [{ client_id: 'ci-importer', client_secret: 'ci-importer-secret-123', grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'admin' }],
  resource_servers: [{
    issuer: '${ISSUER}/notes-as', name: 'Notes AS',
    mcp_servers: [{ resource: '${ISSUER}/notes', name: 'Notes', scopes: ['notes.read'] }],
  }],
  rules: [
    { id: 'engineering-todo', client_id: 'demo-agent', audience: TODO_AS, resource: TODO_MCP, who: { groups: ['engineering'] }, scopes: ['todos.read', 'todos.write'], default_scopes: ['todos.read'], rs_client_id: 'demo-agent-at-todo', lifetime: 120 },
    { id: 'contractors-notes', client_id: 'demo-agent', audience: '${ISSUER}/notes-as', who: { groups: ['contractors'] }, scopes: ['notes.read'] },
  ],
};

test('import dry run: lists every create and update, runs every check, writes nothing', async () => {
  const before = { changes: await changeCount(), rule: (await api.get('/rules/engineering-todo')).body };
  const res = await api.post('/import?dry_run=1', edit);
  expect(res.status).toBe(200);
  expect(res.body).toMatchObject({ dry_run: true, applied: false, summary: { create: 5, update: 1 } });
  expect(res.body.changes.map((c: { action: string; entity: string; entity_id: string }) => `${c.action} ${c.entity} ${c.entity_id}`)).toEqual([
    'create group contractors',
    'create client ci-importer',
    `create resource_server ${idjag.issuer}/notes-as`,
    `create mcp_server ${idjag.issuer}/notes`,
    'update rule engineering-todo',
    'create rule contractors-notes',
  ]);
  const update = res.body.changes[4];
  expect(update.before).toMatchObject({ lifetime: 300, default_scopes: ['todos.read', 'todos.write'] });
  expect(update.after).toMatchObject({ lifetime: 120, default_scopes: ['todos.read'] });
  expect(JSON.stringify(res.body)).not.toContain('ci-importer-secret-123');

  expect(await changeCount()).toBe(before.changes);
  expect((await api.get('/rules/engineering-todo')).body).toEqual(before.rule);
  expect((await api.get('/groups/contractors')).status).toBe(404);
  expect((await api.get('/clients/ci-importer')).status).toBe(404);
});

test('import apply: the same changes, written at once and recorded with the importer as actor', async () => {
  const dry = (await api.post('/import?dry_run=true', edit)).body.changes;
  const res = await api.post('/import', edit);
  expect(res.status).toBe(200);
  expect(res.body).toMatchObject({ dry_run: false, applied: true });
  expect(res.body.changes).toEqual(dry);
  expect((await api.get('/rules/engineering-todo')).body).toMatchObject({ lifetime: 120, updated_by: 'client:idjag-admin-cli' });
  expect((await api.get('/rules/contractors-notes')).body).toMatchObject({ audience: `${idjag.issuer}/notes-as` });
  // the imported client works with the secret the document gave it
  expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, { id: 'ci-importer', secret: 'ci-importer-secret-123' })).status).toBe(200);

  const rows = await idjag.database.db.selectFrom('admin_changes').selectAll().orderBy('at', 'desc').orderBy('id', 'desc').limit(6).execute();
  expect(new Set(rows.map((r) => r.request_id)).size).toBe(1);
  expect(rows.every((r) => r.actor === 'client:idjag-admin-cli')).toBe(true);
  expect(JSON.stringify(rows)).not.toMatch(/ci-importer-secret-123|scrypt/);
  // applying it again changes nothing
  expect((await api.post('/import', edit)).body.changes).toEqual([]);
});

test('import is all or nothing: one bad rule and nothing of the document is written, the error names its path', async () => {
  const before = await changeCount();
  const res = await api.post('/import', {
    groups: [{ name: 'never-created' }],
    rules: [
      { id: 'fine', client_id: 'demo-agent', audience: TODO_AS, who: { groups: ['never-created'] }, scopes: ['todos.read'] },
      { id: 'broken', client_id: 'no-such-client', audience: TODO_AS, resource: TODO_MCP, who: 'everyone', scopes: ['todos.fly'] },
    ],
  });
  expect(res.status).toBe(400);
  expect(res.body.issues).toEqual([
    { path: ['rules', 1, 'client_id'], message: 'unknown client no-such-client' },
    { path: ['rules', 1, 'scopes', 0], message: `todos.fly is not defined by ${TODO_MCP} (it defines todos.read todos.write)` },
  ]);
  expect((await api.get('/groups/never-created')).status).toBe(404);
  expect((await api.get('/rules/fine')).status).toBe(404);
  expect(await changeCount()).toBe(before);
});

test('import validation at the boundary: shape errors and duplicate keys, with their paths', async () => {
  const shape = await api.post('/import', { users: [{ username: 'x', password: 42 }], colours: [] });
  expect(shape.status).toBe(400);
  expect(shape.body.issues.map((i: { path: unknown[] }) => i.path)).toEqual(expect.arrayContaining([['users', 0, 'password'], []]));
  const dup = await api.post('/import', { groups: [{ name: 'a' }, { name: 'a' }] });
  expect(dup.body.issues).toEqual([{ path: ['groups', 1, 'name'], message: 'group a appears twice (also at index 0)' }]);
  const client = await api.post('/import?dry_run=1', { clients: [{ client_id: 'web', grant_types: ['authorization_code'] }] });
  expect(client.body.issues).toEqual([{ path: ['clients', 0, 'redirect_uris'], message: 'redirect_uris is mandatory property' }]);
  expect((await api.post('/import?dry_run=maybe', {})).body.issues[0].path).toEqual(['dry_run']);
});

test('an MCP server\'s scopes cannot shrink under a rule the document leaves alone, but can with the rule changed alongside', async () => {
  const server = { issuer: TODO_AS, name: 'Todo authorization server', aliases: ['urn:example:todo'], released_claims: ['email'], mcp_servers: [{ resource: TODO_MCP, name: 'Todo MCP server', scopes: ['todos.read'] }] };
  const refused = await api.post('/import?dry_run=1', { resource_servers: [server] });
  expect(refused.status).toBe(400);
  expect(refused.body.issues[0]).toMatchObject({ path: ['resource_servers', 0, 'mcp_servers', 0, 'scopes'], message: expect.stringContaining('rule engineering-todo allows todos.write') });
  const rule = { id: 'engineering-todo', client_id: 'demo-agent', audience: TODO_AS, resource: TODO_MCP, who: { groups: ['engineering'] }, scopes: ['todos.read'], default_scopes: ['todos.read'], rs_client_id: 'demo-agent-at-todo' };
  const accepted = await api.post('/import?dry_run=1', { resource_servers: [server], rules: [rule] });
  expect(accepted.status).toBe(200);
  expect(accepted.body.changes.map((c: { entity: string }) => c.entity)).toEqual(['mcp_server', 'rule']);
});

test('the seed records its creations in the change log, as actor seed', async () => {
  const seeded = await idjag.database.db.selectFrom('admin_changes').select(['action', 'entity', 'entity_id']).where('actor', '=', 'seed').execute();
  expect(seeded).toEqual(expect.arrayContaining([
    { action: 'create', entity: 'client', entity_id: 'idjag-admin-cli' },
    { action: 'create', entity: 'rule', entity_id: 'engineering-todo' },
    { action: 'create', entity: 'user', entity_id: 'alice' },
  ]));
});
