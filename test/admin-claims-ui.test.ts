/**
 * The admin web UI's share of claim release and authorization_details: a Resource AS's released claims,
 * sub_id format and aud_tenant; each user's aud_sub (set, refused at the field, removed, shown on the user's
 * page); a rule's authorization_details types; the simulator showing the claims and the details it would
 * grant; the audit page and the client's diagnostics showing what was asked and granted.
 */
import { decodeJwt } from 'jose';
import { adminSignIn, fieldError, text, type AdminUi } from './helpers/admin-ui.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { basic, signIn } from './helpers/browser.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let ui: AdminUi;
let api: AdminClient;
let todoId: string;

beforeAll(async () => {
  idjag = await startTestServer();
  ui = await adminSignIn(idjag.url);
  api = await connectAdmin(idjag.url);
  todoId = (await api.get('/resource-servers')).body.items.find((r: { issuer: string }) => r.issuer === TODO_AS).id;
});
afterAll(() => idjag.dispose());

const form = (name: string, issuer = TODO_AS) => ({ name, aliases: 'urn:example:todo', enabled: 'on', issuer });

describe('a Resource AS: what its ID-JAGs say about the user', () => {
  test('a new one releases nothing: no claim is ticked, and it is created that way', async () => {
    const page = await ui.open('/admin/servers/new');
    expect(page.html).toMatch(/name="released_claims" value="email">/);
    expect(page.html).not.toMatch(/name="released_claims" value="[a-z_]+" checked/);
    const created = await ui.submit('/admin/servers', { issuer: 'https://auth.crm.example', name: 'CRM AS', enabled: 'on' });
    const id = /\/admin\/servers\/([0-9a-f-]{36})$/.exec(created.url)![1]!;
    expect((await api.get(`/resource-servers/${id}`)).body).toMatchObject({ released_claims: [], aud_subs: {} });
    expect((await ui.open('/admin/servers')).html).toContain('ID-JAGs carry no identity claim besides <code>sub</code>');
    await api.delete(`/resource-servers/${id}`);
  });

  test('released claims, sub_id format and aud_tenant are saved from the form, and refused at their field when wrong', async () => {
    const page = await ui.open(`/admin/servers/${todoId}`);
    expect(page.html).toMatch(/name="released_claims" value="email" checked>/);
    const saved = await ui.submit(`/admin/servers/${todoId}`, { ...form('Todo authorization server'), released_claims: ['email', 'name'], sub_id_format: 'iss_sub', aud_tenant: 'todo-eu' });
    expect(saved.html).toContain(`Resource AS ${TODO_AS} saved.`);
    expect((await api.get(`/resource-servers/${todoId}`)).body).toMatchObject({ released_claims: ['email', 'name'], sub_id_format: 'iss_sub', aud_tenant: 'todo-eu' });
    expect(saved.html).toMatch(/<option value="iss_sub" selected>/);

    const bad = await ui.submit(`/admin/servers/${todoId}`, { ...form('Todo authorization server'), released_claims: ['email', 'password'], sub_id_format: 'phone' });
    expect(bad.status).toBe(400);
    expect(text(fieldError(bad.html, 'released_claims')!)).toContain('a released claim is one of email');
    expect(text(fieldError(bad.html, 'sub_id_format')!)).toContain('sub_id_format is one of email, iss_sub, opaque');

    // back as the seed has it: email only, no sub_id, no aud_tenant
    await ui.submit(`/admin/servers/${todoId}`, { ...form('Todo authorization server'), released_claims: 'email' });
    expect((await api.get(`/resource-servers/${todoId}`)).body).toMatchObject({ released_claims: ['email'] });
    expect((await api.get(`/resource-servers/${todoId}`)).body).not.toHaveProperty('sub_id_format');
  });

  test('a user\'s aud_sub: refused at its field for an unknown user, set, shown on the user\'s page, removed', async () => {
    await ui.open(`/admin/servers/${todoId}`);
    const unknown = await ui.submit(`/admin/servers/${todoId}/aud-subs`, { username: 'nobody', aud_sub: 'x-1' });
    expect(unknown.status).toBe(400);
    expect(fieldError(unknown.html, 'aud-sub-username')).toBe('unknown user nobody');
    const empty = await ui.submit(`/admin/servers/${todoId}/aud-subs`, { username: 'alice', aud_sub: '' });
    expect(fieldError(empty.html, 'aud-sub-value')).toBe('enter the identifier the Resource AS knows this user by');

    const set = await ui.submit(`/admin/servers/${todoId}/aud-subs`, { username: 'alice', aud_sub: 'todo-user-0001' });
    expect(set.html).toContain(`aud_sub of alice at ${TODO_AS} saved.`);
    expect(set.html).toMatch(/<a href="\/admin\/users\/alice">alice<\/a><\/td><td><code>todo-user-0001<\/code>/);
    const taken = await ui.submit(`/admin/servers/${todoId}/aud-subs`, { username: 'bob', aud_sub: 'todo-user-0001' });
    expect(text(fieldError(taken.html, 'aud-sub-username')!)).toBe('todo-user-0001 is already alice\'s aud_sub at this Resource AS');
    expect((await ui.open('/admin/users/alice')).html).toMatch(/<code>https:\/\/auth\.todo\.example<\/code>: <code>todo-user-0001<\/code>/);

    const alice = (await signIn(idjag.url)).tokens.id_token as string;
    expect(decodeJwt((await exchange(idjag.url, alice)).body.access_token)).toMatchObject({ aud_sub: 'todo-user-0001' });

    await ui.open(`/admin/servers/${todoId}`);
    const removed = await ui.submit(`/admin/servers/${todoId}/aud-subs/alice/delete`);
    expect(removed.html).toContain('aud_sub of alice removed.');
    expect((await api.get(`/resource-servers/${todoId}`)).body.aud_subs).toEqual({});
  });
});

describe('a rule\'s authorization_details types, and the simulator', () => {
  test('the rule form shows and saves them, one per line; a type outside printable ASCII is refused at the field', async () => {
    const edit = await ui.open('/admin/rules/engineering-todo/edit');
    expect(edit.html).toMatch(/<textarea id="authorization_details_types"[^>]*>todo_list<\/textarea>/);
    const fields = {
      client_id: 'demo-agent', audience: TODO_AS, resource: TODO_MCP, who: 'groups', who_groups: 'engineering', scopes: 'todos.read todos.write',
      default_scopes: 'todos.read todos.write', rs_client_id: 'demo-agent-at-todo', lifetime: '300', enabled: 'on',
    };
    const bad = await ui.submit('/admin/rules/engineering-todo/edit', { ...fields, authorization_details_types: 'todo_list\ntödo' });
    expect(bad.status).toBe(400);
    expect(fieldError(bad.html, 'authorization_details_types')).toBe('authorization_details types are printable ASCII without spaces');
    await ui.submit('/admin/rules/engineering-todo/edit', { ...fields, authorization_details_types: 'todo_list\nhttps://todo.example/lists' });
    expect((await api.get('/rules/engineering-todo')).body.authorization_details_types).toEqual(['todo_list', 'https://todo.example/lists']);
    await ui.submit('/admin/rules/engineering-todo/edit', { ...fields, authorization_details_types: 'todo_list' });
    expect((await api.get('/rules/engineering-todo')).body.authorization_details_types).toEqual(['todo_list']);
  });

  test('the simulator grants what the token endpoint would, and shows the ID-JAG\'s claims', async () => {
    const details = JSON.stringify([{ type: 'todo_list', actions: ['read'] }, { type: 'payment_initiation' }]);
    const q = new URLSearchParams({ run: '1', client_id: 'demo-agent', user: 'alice', audience: TODO_AS, resource: TODO_MCP, authorization_details: details });
    const page = await ui.open(`/admin/simulate?${q}`);
    expect(page.status).toBe(200);
    expect(page.html).toMatch(/<dt><code>authorization_details<\/code><\/dt><dd><code>todo_list<\/code> <\/dd>/);
    const claims = JSON.parse(text(/<pre class="json" id="simulated-claims">([^<]*)<\/pre>/.exec(page.html)![1]!));
    expect(claims).toMatchObject({ iss: idjag.issuer, aud: TODO_AS, email: 'alice@example.com', authorization_details: [{ type: 'todo_list', actions: ['read'] }] });
    expect(page.html).toContain('authorization_details.types');

    const malformed = await ui.open(`/admin/simulate?${new URLSearchParams({ run: '1', client_id: 'demo-agent', user: 'alice', audience: TODO_AS, resource: TODO_MCP, authorization_details: '{"type":"x"}' })}`);
    expect(text(malformed.html)).toContain('authorization_details must be a JSON array of objects');
    expect(malformed.html).toContain('<code>invalid_authorization_details</code>');
  });

  test('the audit page and the client\'s own diagnostics show the types asked and granted', async () => {
    const alice = (await signIn(idjag.url)).tokens.id_token as string;
    const res = await exchange(idjag.url, alice, { authorization_details: JSON.stringify([{ type: 'todo_list' }, { type: 'payment_initiation' }]), actor_token: 'some-actor-token', actor_token_type: 'urn:ietf:params:oauth:token-type:jwt' });
    expect(res.status).toBe(200);
    const list = await ui.open('/admin/audit?decision=issued&user=alice');
    const id = /href="\/admin\/audit\/([0-9a-f-]{36})"/.exec(list.html)![1];
    const entry = await ui.open(`/admin/audit/${id}`);
    expect(entry.html).toMatch(/<code>authorization_details<\/code> asked<\/dt><dd><code>todo_list<\/code> <code>payment_initiation<\/code>/);
    expect(entry.html).toMatch(/<code>authorization_details<\/code> granted<\/dt><dd><code>todo_list<\/code> <\/dd>/);
    expect(entry.html).toContain('<dt>Actor token</dt><dd><code>urn:ietf:params:oauth:token-type:jwt</code> · SHA-256');
    expect(entry.html).not.toContain('some-actor-token');

    const view = await fetch(`${idjag.url}/conformance/clients/demo-agent?limit=1`, { headers: { authorization: basic('demo-agent', 'demo-agent-secret') } });
    const html = await view.text();
    expect(html).toContain('authorization_details asked <code>todo_list</code> <code>payment_initiation</code>');
    expect(html).toContain('granted <code>todo_list</code>');
    expect(html).not.toContain('some-actor-token');
  });
});
