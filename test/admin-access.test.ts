/**
 * Effective access over HTTP (GET /admin/api/access and its export): by MCP server, Resource AS, client and
 * user; what the checks before the policy exclude (a client not registered for token exchange, a disabled user,
 * a disabled MCP server), said in `notes`; keyset pages that add up to the export; clear errors for bad filters.
 */
import { ACCESS_CSV_COLUMNS } from '../src/admin/access.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { exchange, TODO_ADMIN_MCP, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { signIn } from './helpers/browser.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let api: AdminClient;

const q = (params: Record<string, string>) => `/access?${new URLSearchParams(params)}`;
const users = (body: { items: { username: string }[] }) => body.items.map((r) => r.username);
/** engineers beyond alice, from the import below */
const ENGINEERS = Array.from({ length: 23 }, (_, i) => `eng${String(i).padStart(2, '0')}`);

beforeAll(async () => {
  idjag = await startTestServer();
  api = await connectAdmin(idjag.url);
  const imported = await api.post('/import', {
    users: [...ENGINEERS.map((username) => ({ username, groups: ['engineering'] })), { username: 'gone', groups: ['engineering'], disabled: true }],
  });
  expect(imported.status).toBe(200);
});
afterAll(() => idjag.dispose());

test('who can reach an MCP server: each user with the client, rules, scopes, lifetime and client id at the AS', async () => {
  const res = await api.get(q({ resource: TODO_MCP, limit: '100' }));
  expect(res.status).toBe(200);
  expect(users(res.body)).toEqual(['alice', ...ENGINEERS]);
  expect(res.body.items[0]).toEqual({
    username: 'alice', sub: expect.any(String), client_id: 'demo-agent', audience: TODO_AS, resource: TODO_MCP,
    scopes: ['todos.read', 'todos.write'], default_scopes: ['todos.read', 'todos.write'], rule_ids: ['engineering-todo'],
    lifetime: 300, rs_client_ids: ['demo-agent-at-todo'], max_auth_age: null, expires_at: null,
  });
  expect(res.body).toMatchObject({ next_cursor: null, notes: [], at: expect.stringMatching(/Z$/) });
  // bob (sales) and the disabled engineer are not there
  expect(users(res.body)).not.toContain('bob');
  expect(users(res.body)).not.toContain('gone');
});

test('what it says is what the token endpoint does', async () => {
  const alice = (await signIn(idjag.url, { username: 'alice', password: 'alice' })).tokens.id_token as string;
  const bob = (await signIn(idjag.url, { username: 'bob', password: 'bob' })).tokens.id_token as string;
  expect((await exchange(idjag.url, alice)).status).toBe(200);
  expect((await exchange(idjag.url, bob)).status).toBe(400);
});

test('a Resource AS: its MCP servers and its audience-only requests; a user; a client', async () => {
  const byAudience = await api.get(q({ audience: 'urn:example:todo', limit: '3' }));
  expect(byAudience.status).toBe(200);
  expect(byAudience.body.items.map((r: { username: string; resource: string | null }) => [r.username, r.resource])).toEqual([['alice', TODO_MCP], ['eng00', TODO_MCP], ['eng01', TODO_MCP]]);

  // a rule covering the whole AS: the audience-only request (resource null) and each MCP server defining its scope
  expect((await api.post('/rules', { id: 'sales-todo-as', client_id: 'demo-agent', audience: TODO_AS, who: { groups: ['sales'] }, scopes: ['todos.read', 'custom'], max_auth_age: 600 })).status).toBe(201);
  const bob = await api.get(q({ audience: TODO_AS, user: 'bob' }));
  expect(bob.body.items.map((r: { resource: string | null; scopes: string[]; default_scopes: string[]; max_auth_age: number }) => [r.resource, r.scopes, r.default_scopes, r.max_auth_age]))
    .toEqual([[null, ['custom', 'todos.read'], [], 600], [TODO_MCP, ['todos.read'], [], 600]]);
  expect((await api.delete('/rules/sales-todo-as')).status).toBe(204);

  const alice = await api.get(q({ user: 'alice' }));
  expect(alice.body.items.map((r: { resource: string }) => r.resource)).toEqual([`${idjag.issuer}/demo/mcp`, TODO_MCP].sort());
  expect(users(await api.get(q({ user: 'bob' })).then((r) => r.body))).toEqual([]);

  const client = await api.get(q({ client_id: 'demo-agent', group: 'engineering', limit: '500' }));
  // every engineer, on both MCP servers of the seed
  expect(client.body.items).toHaveLength(2 * (1 + ENGINEERS.length));
  expect(users(await api.get(q({ client_id: 'partner-app' })).then((r) => r.body))).toEqual([]);
});

test('what the checks before the policy exclude is said in notes', async () => {
  expect((await api.post('/clients', { client_id: 'no-exchange', grant_types: ['authorization_code'], redirect_uris: ['https://app.example/cb'], response_types: ['code'] })).status).toBe(201);
  expect((await api.post('/rules', { id: 'no-exchange-admin', client_id: 'no-exchange', audience: TODO_AS, resource: TODO_ADMIN_MCP, who: 'everyone', scopes: ['todos.admin'] })).status).toBe(201);
  const res = await api.get(q({ resource: TODO_ADMIN_MCP }));
  expect(res.body.items).toEqual([]);
  expect(res.body.notes).toEqual([expect.stringMatching(/^client no-exchange has no access: client no-exchange is not registered for the grant type urn:ietf:params:oauth:grant-type:token-exchange/)]);

  const gone = await api.get(q({ user: 'gone' }));
  expect(gone.body.items).toEqual([]);
  expect(gone.body.notes).toContain('user gone is disabled: no access');

  const rs = (await api.get('/resource-servers')).body.items.find((r: { issuer: string }) => r.issuer === TODO_AS);
  const mcp = rs.mcp_servers.find((m: { resource: string }) => m.resource === TODO_MCP);
  expect((await api.patch(`/mcp-servers/${mcp.id}`, { enabled: false })).status).toBe(200);
  try {
    const off = await api.get(q({ resource: TODO_MCP }));
    expect(off.body.items).toEqual([]);
    expect(off.body.notes).toContain(`MCP server ${TODO_MCP} is disabled: nobody can reach it`);
  } finally {
    await api.patch(`/mcp-servers/${mcp.id}`, { enabled: true });
  }
  expect((await api.delete('/rules/no-exchange-admin')).status).toBe(204);
});

test('keyset pages: followed to the end, they hold every row once, in the export\'s order', async () => {
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const res: { status: number; body: { items: { username: string; resource: string }[]; next_cursor: string | null } } =
      await api.get(q({ client_id: 'demo-agent', limit: '7', ...(cursor ? { cursor } : {}) }));
    expect(res.status).toBe(200);
    expect(res.body.items.length).toBeLessThanOrEqual(7);
    seen.push(...res.body.items.map((r) => `${r.username} ${r.resource}`));
    cursor = res.body.next_cursor;
    pages++;
  } while (cursor);
  expect(pages).toBe(Math.ceil(seen.length / 7));
  expect(new Set(seen).size).toBe(seen.length);

  const jsonl = await api.get('/access/export?client_id=demo-agent&format=jsonl');
  expect(jsonl.status).toBe(200);
  expect(jsonl.headers.get('content-type')).toBe('application/jsonl; charset=utf-8');
  expect(jsonl.headers.get('content-disposition')).toMatch(/^attachment; filename="idjag-access-.*\.jsonl"$/);
  const exported = jsonl.text.trim().split('\n').map((l) => JSON.parse(l) as { username: string; resource: string });
  expect(exported.map((r) => `${r.username} ${r.resource}`)).toEqual(seen);

  const csv = await api.get('/access/export?client_id=demo-agent&format=csv');
  expect(csv.headers.get('content-type')).toBe('text/csv; charset=utf-8');
  const lines = csv.text.split('\r\n').filter(Boolean);
  expect(lines[0]).toBe(ACCESS_CSV_COLUMNS.join(','));
  expect(lines).toHaveLength(seen.length + 1);
  expect(lines[1]).toMatch(/^alice,[^,]+,demo-agent,/);
});

test('bad filters are 400s at their field, and change nothing', async () => {
  const issue = async (path: string) => {
    const res = await api.get(path);
    expect(res.status).toBe(400);
    return res.body.issues[0];
  };
  expect(await issue(q({ audience: 'https://nowhere.example' }))).toEqual({ path: ['audience'], message: 'unknown Resource AS https://nowhere.example' });
  expect(await issue(q({ resource: 'https://nowhere.example/mcp' }))).toEqual({ path: ['resource'], message: 'unknown MCP server https://nowhere.example/mcp' });
  expect(await issue(q({ audience: TODO_AS, resource: `${idjag.issuer}/demo/mcp` }))).toMatchObject({ path: ['resource'] });
  expect(await issue(q({ user: 'nobody' }))).toEqual({ path: ['user'], message: 'unknown user nobody' });
  expect(await issue(q({ client_id: 'nobody' }))).toEqual({ path: ['client_id'], message: 'unknown client nobody' });
  expect(await issue(q({ group: 'nobody' }))).toEqual({ path: ['group'], message: 'unknown group nobody' });
  expect((await issue(q({ at: 'yesterday' }))).path).toEqual(['at']);
  expect((await issue(q({ cursor: 'not-a-cursor' }))).path).toEqual(['cursor']);
  expect((await issue(q({ limit: '0' }))).path).toEqual(['limit']);
  expect((await issue('/access/export?format=xml')).path).toEqual(['format']);
  expect((await issue('/access/export?format=csv&user=nobody')).path).toEqual(['user']);
  expect((await issue(q({ surprise: '1' }))).path).toEqual([]);
});
