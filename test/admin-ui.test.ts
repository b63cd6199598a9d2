import { readdirSync } from 'node:fs';
import { authenticate } from '../src/oidc/accounts.ts';
import { decisionChart, niceMax } from '../src/admin/ui/chart.ts';
import { safeNext } from '../src/admin/ui/session.ts';
import { timeInput } from '../src/admin/ui/audit.ts';
import { loadViews } from '../src/web/views.ts';
import { signIn, tokenRequest } from './helpers/browser.ts';
import { adminSignIn, AdminUi, fieldError, text, type Page } from './helpers/admin-ui.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { exchange, TODO_ADMIN_MCP, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { auditCount as countAudit } from './helpers/audit.ts';

let idjag: TestServer;
let ui: AdminUi;
let api: AdminClient;

beforeAll(async () => {
  idjag = await startTestServer();
  ui = await adminSignIn(idjag.url);
  api = await connectAdmin(idjag.url);
});
afterAll(() => idjag.dispose());

const db = () => idjag.database.db;
const changes = (entityId: string) => db().selectFrom('admin_changes').selectAll().where('entity_id', '=', entityId).orderBy('at').orderBy('id').execute();
const changeCount = async () => Number((await db().selectFrom('admin_changes').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
const auditCount = () => countAudit(idjag);
const location = (res: Response) => res.headers.get('location');

const salesRule = {
  id: 'sales-todo',
  description: 'sales may use the todo MCP server',
  client_id: 'demo-agent',
  audience: TODO_AS,
  resource: TODO_MCP,
  who: 'groups',
  who_groups: 'sales',
  scopes: 'todos.read todos.write',
  default_scopes: 'todos.read',
  rs_client_id: 'demo-agent-at-todo',
  lifetime: '120',
  enabled: 'on',
};

describe('signing in', () => {
  test('no session: a page redirects to sign in, which goes through idjag\'s own login as the idjag-admin-ui client (code + PKCE)', async () => {
    const fresh = new AdminUi(idjag.url);
    const res = await fresh.browser.get(`${idjag.url}/admin/rules?group=sales`);
    expect(res.status).toBe(303);
    expect(location(res)).toBe('/admin/login?next=%2Fadmin%2Frules%3Fgroup%3Dsales');
    const login = await fresh.browser.get(`${idjag.url}${location(res)}`);
    expect(login.status).toBe(303);
    const auth = new URL(location(login)!, idjag.url);
    expect(auth.pathname).toBe('/auth');
    expect(Object.fromEntries(auth.searchParams)).toMatchObject({
      client_id: 'idjag-admin-ui', response_type: 'code', scope: 'openid', code_challenge_method: 'S256',
      redirect_uri: `${idjag.issuer}/admin/callback`,
    });
    // signing in lands on the page first asked for
    const page = await fresh.open('/admin/rules?group=sales', { username: 'admin', password: 'admin' });
    expect(page.status).toBe(200);
    expect(new URL(page.url).pathname + new URL(page.url).search).toBe('/admin/rules?group=sales');
    expect(page.html).toContain('<h1>Policy rules</h1>');
  });

  test('the session cookie is signed, HttpOnly, SameSite=Lax and scoped to /admin; a tampered one is no session', async () => {
    const fresh = new AdminUi(idjag.url);
    await fresh.open('/admin', { username: 'admin', password: 'admin' });
    const cookies = await fresh.browser.jar.getCookies(`${idjag.url}/admin`);
    const session = cookies.find((c) => c.key === 'idjag.admin');
    expect(session).toMatchObject({ httpOnly: true, sameSite: 'lax', path: '/admin' });
    expect(cookies.some((c) => c.key === 'idjag.admin.sig')).toBe(true);
    // claim another subject without the signing key: not signed in any more
    const forged = Buffer.from(JSON.stringify({ sub: 'someone-else', exp: 9_999_999_999 })).toString('base64url');
    await fresh.browser.jar.setCookie(`idjag.admin=${forged}; Path=/admin`, `${idjag.url}/admin`);
    const res = await fresh.browser.get(`${idjag.url}/admin`);
    expect(res.status).toBe(303);
    expect(location(res)).toMatch(/^\/admin\/login/);
  });

  test('the UI repairs its own client when a sign-in starts: a secret rotated or the client disabled through the API', async () => {
    expect((await api.post('/clients/idjag-admin-ui/rotate-secret')).status).toBe(200);
    expect((await api.post('/clients/idjag-admin-ui/disable')).status).toBe(200);
    await adminSignIn(idjag.url);
    expect((await api.get('/clients/idjag-admin-ui')).body).toMatchObject({
      disabled: false, first_party: true, redirect_uris: [`${idjag.issuer}/admin/callback`], grant_types: ['authorization_code'],
    });
    // the repair is recorded (without the secret); the secret itself is in no change, log line or page
    expect((await changes('idjag-admin-ui')).map((c) => [c.actor, c.action])).toEqual([
      ['system', 'create'], ['client:idjag-admin-cli', 'rotate_secret'], ['client:idjag-admin-cli', 'disable'], ['system', 'enable'],
    ]);
  });

  test('a callback without the sign-in it answers (replayed, or started elsewhere) is refused', async () => {
    const res = await new AdminUi(idjag.url).browser.get(`${idjag.url}/admin/callback?code=abc&state=xyz`);
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('This sign-in expired or was started elsewhere');
  });

  test('a user outside the admins group signs in but gets a 403 page showing nothing of the admin side, and no session', async () => {
    const alice = new AdminUi(idjag.url);
    const page = await alice.open('/admin/rules', { username: 'alice', password: 'alice' });
    expect(page.status).toBe(403);
    expect(page.html).toContain('Not an administrator');
    expect(page.html).not.toContain('Policy rules');
    expect(page.html).not.toContain('/admin/logout');
    // a way out, to sign in as someone else: the provider's logout for the admin UI's client
    expect(text(page.html)).toContain(`href="/session/end?client_id=idjag-admin-ui&post_logout_redirect_uri=${encodeURIComponent(`${idjag.issuer}/admin/signed-out`)}"`);
    expect((await alice.browser.jar.getCookies(`${idjag.url}/admin`)).some((c) => c.key === 'idjag.admin' && c.value)).toBe(false);
    // and a form post goes nowhere either
    const rulesBefore = await db().selectFrom('policy_rules').select('id').execute();
    const post = await alice.post('/admin/rules', { ...salesRule, id: 'alice-rule' });
    expect(post.status).toBe(303);
    expect(await db().selectFrom('policy_rules').select('id').execute()).toEqual(rulesBefore);
  });

  test('leaving the admins group (or being disabled) takes effect on the next request', async () => {
    expect((await api.post('/users', { username: 'carol', password: 'carol-password', groups: ['admins'] })).status).toBe(201);
    const carol = await adminSignIn(idjag.url, 'carol', 'carol-password');
    expect((await carol.open('/admin/rules')).status).toBe(200);
    await api.patch('/users/carol', { groups: [] });
    const after = await carol.open('/admin/rules');
    expect(after.status).toBe(403);
    expect(after.html).not.toContain('Policy rules');

    await api.patch('/users/carol', { groups: ['admins'] });
    const again = await adminSignIn(idjag.url, 'carol', 'carol-password');
    await api.post('/users/carol/disable');
    expect((await again.open('/admin')).status).toBe(403);
  });

  test('signing out ends the admin session and sends the browser to end the provider session', async () => {
    const dave = await adminSignIn(idjag.url);
    await dave.open('/admin');
    const res = await dave.post('/admin/logout');
    expect(res.status).toBe(303);
    const end = new URL(location(res)!, idjag.url);
    expect(end.pathname).toBe('/session/end');
    expect(end.searchParams.get('client_id')).toBe('idjag-admin-ui');
    expect(end.searchParams.get('post_logout_redirect_uri')).toBe(`${idjag.issuer}/admin/signed-out`);
    expect((await dave.browser.get(`${idjag.url}/admin`)).status).toBe(303);
    // the provider asks to confirm, then comes back to the admin UI's signed-out page
    const confirm = await dave.open(`${end.pathname}${end.search}`);
    expect(confirm.html).toContain('Yes, sign me out');
    const form = /<form[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/.exec(confirm.html)!;
    const fields = Object.fromEntries([...form[2]!.matchAll(/name="([^"]+)" value="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    const out = await dave.submit(new URL(form[1]!, idjag.url).pathname, { ...fields, logout: 'yes' });
    expect(out.url).toBe(`${idjag.url}/admin/signed-out`);
    expect(out.html).toContain('You are signed out');
    // the provider's session is gone too: the next visit asks for the password again
    const back = await dave.open('/admin');
    expect(back.html).toMatch(/action="\/interaction\/[^"]+\/login"/);
  });
});

describe('CSRF', () => {
  test('a missing or stale token is refused with 403 and changes nothing', async () => {
    await ui.open('/admin/rules');
    const before = await changeCount();
    const missing = await ui.post('/admin/rules/engineering-todo/disable', { _csrf: '' });
    expect(missing.status).toBe(403);
    expect(await missing.text()).toContain('Form expired');
    // a token made for another browser (another CSRF secret) is stale here
    const other = await adminSignIn(idjag.url);
    await other.open('/admin/rules');
    const stale = await ui.post('/admin/rules/engineering-todo/disable', { _csrf: other.csrf });
    expect(stale.status).toBe(403);
    const json = await ui.browser.fetch(`${idjag.url}/admin/rules/engineering-todo/disable`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    expect(json.status).toBe(403);
    expect((await api.get('/rules/engineering-todo')).body.enabled).toBe(true);
    expect(await changeCount()).toBe(before);
  });
});

describe('policy rules', () => {
  test('validation errors are shown next to their fields, with the values as typed', async () => {
    await ui.open('/admin/rules/new');
    // what the schema refuses
    const res = await ui.submit('/admin/rules', { ...salesRule, lifetime: '99999', max_auth_age: 'soon' });
    expect(res.status).toBe(400);
    expect(fieldError(res.html, 'lifetime')).toBe('at most 3600 s');
    expect(fieldError(res.html, 'max_auth_age')).toBe('enter a whole number');
    expect(fieldError(res.html, 'client_id')).toBeUndefined();
    expect(res.html).toMatch(/id="lifetime"[^>]*value="99999"[^>]*aria-invalid="true"/);

    // what the stored configuration refuses: an unknown client, a scope the MCP server does not define
    const stored = await ui.submit('/admin/rules', { ...salesRule, client_id: 'no-such-client', scopes: 'todos.read todos.delete' });
    expect(stored.status).toBe(400);
    expect(fieldError(stored.html, 'client_id')).toBe('unknown client no-such-client');
    expect(text(fieldError(stored.html, 'scopes')!)).toBe(`todos.delete is not defined by ${TODO_MCP} (it defines todos.read todos.write)`);
    expect(stored.html).toMatch(/id="client_id"[^>]*value="no-such-client"[^>]*aria-invalid="true"/);
    expect(stored.html).toMatch(/id="scopes"[^>]*value="todos.read todos.delete"/);

    // no group named
    const noGroup = await ui.submit('/admin/rules', { ...salesRule, who_groups: '' });
    expect(fieldError(noGroup.html, 'who_groups')).toBe('name at least one group, or choose another option');

    // a rule saying what engineering-todo says
    const twin = await ui.submit('/admin/rules', { ...salesRule, id: '', who_groups: 'engineering' });
    expect(twin.status).toBe(400);
    expect(fieldError(twin.html, 'who')).toMatch(/^duplicate of rule engineering-todo/);
    expect((await api.get('/rules?group=sales')).body.items).toEqual([]);
  });

  test('create, edit the Resource-AS client id, disable, enable, delete: each recorded with the admin as actor, before and after', async () => {
    await ui.open('/admin/rules/new');
    const created = await ui.post('/admin/rules', salesRule);
    expect(created.status).toBe(303);
    expect(location(created)).toBe('/admin/rules/sales-todo/edit');
    const edit = await ui.open('/admin/rules/sales-todo/edit');
    expect(edit.html).toContain('Rule sales-todo created.');
    expect(edit.html).toMatch(/id="rs_client_id"[^>]*value="demo-agent-at-todo"/);
    expect((await api.get('/rules/sales-todo')).body).toMatchObject({
      client_id: 'demo-agent', audience: TODO_AS, resource: TODO_MCP, who: { groups: ['sales'] }, scopes: ['todos.read', 'todos.write'],
      default_scopes: ['todos.read'], rs_client_id: 'demo-agent-at-todo', lifetime: 120, enabled: true, created_by: 'user:admin',
    });

    // the list shows the mapped client id; filters by group and MCP server
    const list = await ui.open('/admin/rules?group=sales');
    expect(list.html).toContain('sales-todo');
    expect(list.html).not.toContain('>engineering-todo<');
    expect(list.html).toContain('<code class="rs-client-id">demo-agent-at-todo</code>');
    expect((await ui.open(`/admin/rules?resource=${encodeURIComponent(TODO_ADMIN_MCP)}`)).html).not.toContain('sales-todo');
    expect((await ui.open('/admin/rules?client_id=partner-app')).html).toContain('No rule matches these filters.');

    const saved = await ui.post('/admin/rules/sales-todo/edit', { ...salesRule, rs_client_id: 'sales-agent-at-todo', max_auth_age: '' });
    expect(saved.status).toBe(303);
    expect((await api.get('/rules/sales-todo')).body.rs_client_id).toBe('sales-agent-at-todo');
    // emptying an optional field clears it
    await ui.open('/admin/rules/sales-todo/edit');
    await ui.post('/admin/rules/sales-todo/edit', { ...salesRule, description: '', rs_client_id: '' });
    expect((await api.get('/rules/sales-todo')).body.description).toBeUndefined();
    expect((await api.get('/rules/sales-todo')).body.rs_client_id).toBeUndefined();
    await ui.post('/admin/rules/sales-todo/edit', salesRule);

    await ui.open('/admin/rules');
    expect(location(await ui.post('/admin/rules/sales-todo/disable', { back: '/admin/rules?group=sales' }))).toBe('/admin/rules?group=sales');
    expect((await api.get('/rules/sales-todo')).body.enabled).toBe(false);
    expect(location(await ui.post('/admin/rules/sales-todo/enable', { back: 'https://evil.example/' }))).toBe('/admin/rules');
    expect((await api.get('/rules/sales-todo')).body.enabled).toBe(true);

    const log = await changes('sales-todo');
    expect(log.map((c) => [c.actor, c.action])).toEqual([
      ['user:admin', 'create'], ['user:admin', 'update'], ['user:admin', 'update'], ['user:admin', 'update'], ['user:admin', 'disable'], ['user:admin', 'enable'],
    ]);
    expect(JSON.parse(log[1]!.before!).rs_client_id).toBe('demo-agent-at-todo');
    expect(JSON.parse(log[1]!.after!).rs_client_id).toBe('sales-agent-at-todo');
    expect(log.every((c) => c.request_id)).toBe(true);
    // the rule's page shows its history
    expect((await ui.open('/admin/rules/sales-todo/edit')).html).toMatch(/user:admin<\/td>\s*<td>disable rule/);

    const deleted = await ui.post('/admin/rules/sales-todo/delete', { back: '/admin/rules/sales-todo/edit' });
    expect(location(deleted)).toBe('/admin/rules');
    expect((await api.get('/rules/sales-todo')).status).toBe(404);
    expect((await changes('sales-todo')).at(-1)).toMatchObject({ actor: 'user:admin', action: 'delete', after: null });
    expect((await ui.open('/admin/rules/sales-todo/edit')).status).toBe(404);
  });

  test('whatever an admin types comes back escaped', async () => {
    const evil = `<script>alert("x")</script><img src=x onerror=alert(1)>'`;
    await ui.open('/admin/rules/new');
    await ui.post('/admin/rules', { ...salesRule, id: 'escaped', description: evil, who: 'users', who_users: 'bob' });
    for (const path of ['/admin/rules', '/admin/rules/escaped/edit', '/admin/changes']) {
      const page = await ui.open(path);
      expect(page.html).not.toContain('<script>alert');
      expect(page.html).not.toContain('<img src=x');
      expect(page.html).toContain('&lt;script&gt;alert(');
    }
    expect((await ui.open('/admin/rules')).html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;&#x27;');
    // a bad value re-rendered in the form is escaped too
    const bad = await ui.submit('/admin/rules', { ...salesRule, client_id: `"><script>x</script>` });
    expect(bad.html).not.toContain('<script>x</script>');
    expect(bad.html).toContain('value="&quot;&gt;&lt;script&gt;x&lt;/script&gt;"');
    await api.delete('/rules/escaped');
  });
});

describe('directory', () => {
  test('a confidential client\'s secret is shown once at creation and at rotation, and works at the token endpoint', async () => {
    await ui.open('/admin/clients/new');
    const page = await ui.submit('/admin/clients', {
      client_id: 'ci-bot', client_name: 'CI bot', type: 'confidential', token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'], redirect_uris: '', scope: 'admin',
    });
    expect(page.status).toBe(200);
    const secret = /id="secret" type="text" readonly value="([^"]+)"/.exec(page.html)?.[1];
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, { id: 'ci-bot', secret: secret! })).status).toBe(200);
    const view = await ui.open('/admin/clients/ci-bot');
    expect(view.html).not.toContain(secret!);
    expect((await changes('ci-bot'))[0]).toMatchObject({ actor: 'user:admin', action: 'create' });
    expect((await changes('ci-bot'))[0]!.after).not.toContain(secret!);

    const rotated = await ui.submit('/admin/clients/ci-bot/rotate-secret');
    const fresh = /id="secret" type="text" readonly value="([^"]+)"/.exec(rotated.html)?.[1];
    expect(fresh).toBeDefined();
    expect(fresh).not.toBe(secret);
    expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, { id: 'ci-bot', secret: secret! })).status).toBe(401);
    expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, { id: 'ci-bot', secret: fresh! })).status).toBe(200);
  });

  test('a public client gets no secret; the provider\'s and idjag\'s own metadata checks show at their fields', async () => {
    await ui.open('/admin/clients/new');
    const notUri = await ui.submit('/admin/clients', { client_id: 'spa', type: 'public', grant_types: 'authorization_code', redirect_uris: 'not-a-uri' });
    expect(notUri.status).toBe(400);
    expect(fieldError(notUri.html, 'redirect_uris')).toBeDefined();
    const bad = await ui.submit('/admin/clients', { client_id: 'spa', type: 'public', grant_types: ['authorization_code', 'client_credentials'], redirect_uris: 'https://spa.example/cb' });
    expect(bad.status).toBe(400);
    expect(fieldError(bad.html, 'grant_types')).toBe('a public client (token_endpoint_auth_method none) cannot use client_credentials');
    expect(bad.html).toMatch(/value="client_credentials" checked/);
    // the provider's own metadata validation, filed at the field it names
    const noRedirect = await ui.submit('/admin/clients', { client_id: 'web', type: 'confidential', grant_types: 'authorization_code', redirect_uris: '' });
    expect(noRedirect.status).toBe(400);
    expect(fieldError(noRedirect.html, 'redirect_uris')).toMatch(/^redirect_uris/);

    const ok = await ui.post('/admin/clients', { client_id: 'spa', client_name: 'SPA', type: 'public', grant_types: 'authorization_code', redirect_uris: 'https://spa.example/cb\nhttps://spa.example/cb2', first_party: 'on' });
    expect(ok.status).toBe(303);
    expect((await api.get('/clients/spa')).body).toMatchObject({
      type: 'public', token_endpoint_auth_method: 'none', has_secret: false, first_party: true,
      redirect_uris: ['https://spa.example/cb', 'https://spa.example/cb2'], grant_types: ['authorization_code'], response_types: ['code'],
    });
    // editing: first-party off, one redirect URI less
    await ui.open('/admin/clients/spa');
    expect((await ui.post('/admin/clients/spa', { client_name: 'SPA', token_endpoint_auth_method: 'none', grant_types: 'authorization_code', redirect_uris: 'https://spa.example/cb' })).status).toBe(303);
    expect((await api.get('/clients/spa')).body).toMatchObject({ first_party: false, redirect_uris: ['https://spa.example/cb'] });
    // a client that rules name cannot be deleted: the page says why
    await ui.open('/admin/clients/demo-agent');
    const refused = await ui.submit('/admin/clients/demo-agent/delete');
    expect(text(refused.html)).toContain('client demo-agent is named by rules');
    // the admin UI's own client is not editable here
    const own = await ui.submit('/admin/clients/idjag-admin-ui/disable');
    expect(text(own.html)).toContain('idjag-admin-ui is the admin UI\'s own client');
    expect((await api.get('/clients/idjag-admin-ui')).body.disabled).toBe(false);
  });

  test('users: create with a generated password (shown once), edit groups, reset the password, disable; no self-lockout', async () => {
    await ui.open('/admin/users/new');
    const invalid = await ui.submit('/admin/users', { username: 'erin', email: 'not-an-email', password: 'short' });
    expect(invalid.status).toBe(400);
    expect(fieldError(invalid.html, 'email')).toBeDefined();
    expect(fieldError(invalid.html, 'password')).toBe('at least 8 characters');
    expect(invalid.html).not.toContain('value="short"');

    const created = await ui.submit('/admin/users', { username: 'erin', name: 'Erin', email: 'erin@example.com', groups: 'sales' });
    const password = /id="secret" type="text" readonly value="([^"]+)"/.exec(created.html)?.[1];
    expect(password).toBeDefined();
    expect((await authenticate(db(), 'erin', password!)).ok).toBe(true);

    await ui.open('/admin/users/erin');
    await ui.post('/admin/users/erin', { name: 'Erin E.', email: 'erin@example.com', groups: ['sales', 'engineering'] });
    expect((await api.get('/users/erin')).body).toMatchObject({ name: 'Erin E.', groups: ['engineering', 'sales'] });

    const reset = await ui.submit('/admin/users/erin/reset-password', { password: 'a-new-password' });
    expect(reset.html).toContain('The password of erin was changed.');
    expect((await authenticate(db(), 'erin', 'a-new-password')).ok).toBe(true);
    const short = await ui.submit('/admin/users/erin/reset-password', { password: 'x' });
    expect(fieldError(short.html, 'new-password')).toBe('at least 8 characters');

    await ui.post('/admin/users/erin/disable');
    expect((await api.get('/users/erin')).body.disabled).toBe(true);
    expect((await changes('erin')).map((c) => c.action)).toEqual(['create', 'update', 'reset_password', 'disable']);
    expect((await changes('erin')).every((c) => c.actor === 'user:admin')).toBe(true);

    // the signed-in admin cannot disable themselves or leave the admins group here
    await ui.open('/admin/users/admin');
    expect(text((await ui.submit('/admin/users/admin/disable')).html)).toContain('you cannot disable your own account here');
    const leave = await ui.submit('/admin/users/admin', { name: 'Idjag Admin', email: 'admin@example.com', groups: 'sales' });
    expect(fieldError(leave.html, 'groups')).toMatch(/^you cannot remove yourself from admins/);
    expect((await api.get('/users/admin')).body).toMatchObject({ disabled: false, groups: ['admins'] });

    const list = await ui.open('/admin/users?group=sales');
    expect(list.html).toContain('>bob<');
    expect(list.html).not.toContain('>alice<');
  });

  test('groups: create, set the members (unknown users reported), delete', async () => {
    await ui.open('/admin/groups');
    const created = await ui.submit('/admin/groups', { name: 'support', description: 'Support desk' });
    expect(created.url).toBe(`${idjag.url}/admin/groups/support`);
    const unknown = await ui.submit('/admin/groups/support/members', { usernames: 'alice\nnobody' });
    expect(unknown.status).toBe(400);
    expect(fieldError(unknown.html, 'usernames')).toBe('unknown user nobody');
    await ui.submit('/admin/groups/support/members', { usernames: 'alice, bob' });
    expect((await api.get('/groups/support')).body.members).toEqual(['alice', 'bob']);
    await ui.submit('/admin/groups/support/delete');
    expect((await api.get('/groups/support')).status).toBe(404);
  });

  test('Resource AS and MCP servers: create, add an MCP server with scopes; a scope a rule still uses cannot be removed', async () => {
    await ui.open('/admin/servers/new');
    const bad = await ui.submit('/admin/servers', { issuer: 'not a uri', name: '' });
    expect(fieldError(bad.html, 'issuer')).toBe('must be an absolute URI without a fragment');
    expect(fieldError(bad.html, 'name')).toBe('enter a name');
    const created = await ui.submit('/admin/servers', { issuer: 'https://auth.crm.example', name: 'CRM AS', aliases: 'urn:example:crm', enabled: 'on' });
    const id = /\/admin\/servers\/([0-9a-f-]{36})$/.exec(created.url)?.[1];
    expect(id).toBeDefined();
    const added = await ui.submit(`/admin/servers/${id}/mcp-servers`, { resource: 'https://mcp.crm.example/mcp', name: 'CRM MCP', scopes: 'crm.read, crm.write', enabled: 'on' });
    expect(added.html).toContain('MCP server https://mcp.crm.example/mcp added.');
    const mcp = (await api.get(`/resource-servers/${id}`)).body.mcp_servers[0];
    expect(mcp).toMatchObject({ scopes: ['crm.read', 'crm.write'], enabled: true });

    await api.post('/rules', { id: 'crm', client_id: 'demo-agent', audience: 'https://auth.crm.example', resource: 'https://mcp.crm.example/mcp', who: 'everyone', scopes: ['crm.write'] });
    await ui.open(`/admin/mcp-servers/${mcp.id}`);
    const narrowed = await ui.submit(`/admin/mcp-servers/${mcp.id}`, { name: 'CRM MCP', scopes: 'crm.read', enabled: 'on' });
    expect(narrowed.status).toBe(400);
    expect(text(fieldError(narrowed.html, 'scopes')!)).toMatch(/^rule crm allows crm.write/);
    expect((await ui.open('/admin/servers')).html).toContain('https://mcp.crm.example/mcp');
  });
});

describe('audit log, simulator, keys, dashboard', () => {
  let bobToken: string;
  beforeAll(async () => {
    bobToken = (await signIn(idjag.url, { username: 'bob', password: 'bob' })).tokens.id_token;
    const alice = (await signIn(idjag.url, { username: 'alice', password: 'alice' })).tokens.id_token;
    expect((await exchange(idjag.url, alice)).status).toBe(200);
    expect((await exchange(idjag.url, bobToken)).status).toBe(400);
  });

  test('the audit page filters, pages by keyset, and exports the filtered set as CSV and JSON Lines', async () => {
    const denied = await ui.open('/admin/audit?decision=denied&user=bob');
    expect(denied.html).toContain('subject_not_allowed');
    expect(denied.html).not.toContain('<span class="badge issued">issued</span>');
    const links = [...denied.html.matchAll(/href="(\/admin\/audit\/export\?[^"]+)"/g)].map((m) => text(m[1]!));
    expect(links).toHaveLength(2);
    const csv = await ui.browser.get(`${idjag.url}${links[0]}`);
    expect(csv.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(csv.headers.get('content-disposition')).toMatch(/^attachment; filename="idjag-audit-.*\.csv"$/);
    const rows = (await csv.text()).trim().split('\r\n');
    expect(rows[0]).toMatch(/^id,time,decision,reason/);
    expect(rows.length).toBeGreaterThan(1);
    expect(rows.slice(1).every((r) => r.includes(',denied,') && r.includes(',bob,'))).toBe(true);
    const jsonl = await ui.browser.get(`${idjag.url}${links[1]}`);
    const lines = (await jsonl.text()).trim().split('\n').map((l) => JSON.parse(l) as { decision: string; username: string });
    expect(lines.length).toBe(rows.length - 1);
    expect(lines.every((l) => l.decision === 'denied' && l.username === 'bob')).toBe(true);

    // keyset pages: one row a page is not offered by the UI, so page through 50 by inserting more than that
    for (let i = 0; i < 51; i++) await exchange(idjag.url, bobToken, { audience: 'https://unknown.example' });
    const first = await ui.open('/admin/audit?reason=audience');
    const next = /href="(\/admin\/audit\?[^"]*cursor=[^"]+)"/.exec(text(first.html))?.[1];
    expect(next).toBeDefined();
    const second = await ui.open(next!);
    expect(second.html).toContain('← Newest');
    const ids = (html: string) => [...html.matchAll(/href="\/admin\/audit\/([0-9a-f-]{36})"/g)].map((m) => m[1]);
    expect(ids(first.html)).toHaveLength(50);
    expect(ids(second.html).length).toBeGreaterThanOrEqual(1);
    expect(ids(second.html).some((x) => ids(first.html).includes(x))).toBe(false);

    // a bad filter is shown at its field
    const bad = await ui.open('/admin/audit?from=yesterday&decision=maybe');
    expect(bad.status).toBe(400);
    expect(fieldError(bad.html, 'from')).toBeDefined();
    expect(fieldError(bad.html, 'decision')).toBeDefined();
  });

  test('a decision\'s page shows every check, passed or failed, and the rule that matched', async () => {
    const list = await ui.open('/admin/audit?decision=issued&user=alice');
    const id = /href="\/admin\/audit\/([0-9a-f-]{36})"/.exec(list.html)![1];
    const page = await ui.open(`/admin/audit/${id}`);
    expect(page.html).toContain('Rule that matched');
    expect(page.html).toContain('href="/admin/rules/engineering-todo/edit"');
    expect(page.html).toMatch(/<code>id_token\.signature<\/code><\/td>\s*<td><span class="badge passed">passed<\/span>/);
    expect(page.html).toContain('Replay in the simulator');

    const deniedList = await ui.open('/admin/audit?decision=denied&reason=subject_not_allowed');
    const deniedId = /href="\/admin\/audit\/([0-9a-f-]{36})"/.exec(deniedList.html)![1];
    const denied = await ui.open(`/admin/audit/${deniedId}`);
    expect(denied.html).toMatch(/<tr class="check failed">[\s\S]*?<code>policy<\/code>/);
    expect(denied.html).toMatch(/<code>scope<\/code><\/td>\s*<td><span class="badge not_reached">not reached/);
    expect((await ui.open('/admin/audit/not-an-id')).status).toBe(400);
    expect((await ui.open('/admin/audit/00000000-0000-7000-8000-000000000000')).status).toBe(404);
  });

  test('the simulator answers from the policy engine, shows the ID-JAG it would issue, and writes nothing', async () => {
    const audit = await auditCount();
    const q = (o: Record<string, string>) => `/admin/simulate?${new URLSearchParams({ run: '1', client_id: 'demo-agent', audience: TODO_AS, resource: TODO_MCP, ...o })}`;
    const alice = await ui.open(q({ user: 'alice', scope: 'todos.read' }));
    expect(alice.html).toContain('<span class="badge issued">issued</span>');
    expect(alice.html).toContain('<dt><code>client_id</code></dt><dd><code>demo-agent-at-todo</code></dd>');
    expect(alice.html).toMatch(/Granted scopes<\/dt><dd><code>todos\.read<\/code>/);
    const bob = await ui.open(q({ user: 'bob' }));
    expect(bob.html).toContain('<span class="badge denied">denied</span> <code>subject_not_allowed</code>');
    expect(bob.html).toContain('<code>invalid_target</code>');
    const unknown = await ui.open(q({ user: 'nobody' }));
    expect(unknown.status).toBe(400);
    expect(fieldError(unknown.html, 'user')).toBe('unknown user nobody');
    expect(fieldError((await ui.open(q({ user: 'bob', auth_age: 'old' }))).html, 'auth_age')).toBe('enter a whole number');
    expect(await auditCount()).toBe(audit);
  });

  test('keys: the JWKS and the signing keys; rotating makes new keys sign and records who did it', async () => {
    const before = await ui.open('/admin/keys');
    const kid = (await (await fetch(`${idjag.url}/jwks`)).json() as { keys: { kid: string }[] }).keys[0]!.kid;
    expect(before.html).toContain(kid);
    const empty = await ui.submit('/admin/keys/rotate');
    expect(empty.html).toContain('choose what to rotate');
    const rotated = await ui.submit('/admin/keys/rotate', { purposes: 'id_jag' });
    expect(rotated.html).toMatch(/Rotated: [\w-]+ now signs/);
    const keys = (await api.get('/keys')).body;
    expect(keys.keys.filter((k: { purpose: string }) => k.purpose === 'id_jag')).toHaveLength(2);
    expect((await changes('id_jag')).at(-1)).toMatchObject({ actor: 'user:admin', action: 'rotate_keys' });
  });

  test('the dashboard counts, charts the last 24 hours from numbers only, and lists the latest decisions', async () => {
    const page = await ui.open('/admin');
    const issued = Number((await db().selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).where('decision', '=', 'issued').executeTakeFirstOrThrow()).n);
    expect(page.html).toContain(`issued <strong>${issued}</strong>`);
    expect(page.html).toMatch(/<svg class="chart" viewBox="0 0 720 200" role="img" aria-label="Last 24 hours: \d+ issued, \d+ denied">/);
    expect((page.html.match(/<rect class="bar (issued|denied)"/g) ?? [])).toHaveLength(48);
    expect(page.html).toContain('Latest decisions');
  });
});

describe('pages and pieces', () => {
  test('every admin view compiles and renders with no data', () => {
    const render = loadViews();
    for (const file of readdirSync(new URL('../views/admin', import.meta.url))) {
      expect(() => render(`admin/${file.replace(/\.hbs$/, '')}`, {})).not.toThrow();
    }
  });

  test('no page has an inline script or style attribute (the CSP would block them)', async () => {
    for (const path of ['/admin', '/admin/rules', '/admin/rules/new', '/admin/rules/engineering-todo/edit', '/admin/clients', '/admin/clients/demo-agent',
      '/admin/servers', '/admin/users', '/admin/users/alice', '/admin/groups', '/admin/groups/sales', '/admin/audit', '/admin/changes', '/admin/simulate', '/admin/keys',
      '/admin/access', '/admin/access?resource=https%3A%2F%2Fmcp.todo.example%2Fmcp', '/admin/rules/engineering-todo/impact?action=delete']) {
      const page: Page = await ui.open(path);
      expect([path, page.status]).toEqual([path, 200]);
      expect(page.headers.get('cache-control')).toBe('no-store');
      expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
      expect(page.html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
      expect(page.html).not.toMatch(/\sstyle=|\son[a-z]+=/i);
    }
    expect((await ui.open('/admin/nothing-here')).status).toBe(404);
  });

  test('sign-in returns only to admin pages of this origin', () => {
    expect(safeNext('/admin/rules?group=sales')).toBe('/admin/rules?group=sales');
    for (const bad of ['https://evil.example/admin', '//evil.example/admin', '/administrator', '/admin/api/rules', '/\\evil.example', undefined, ['/admin']]) {
      expect(safeNext(bad)).toBe('/admin');
    }
  });

  test('audit time filters: a datetime-local value is read as UTC', () => {
    expect(timeInput('2026-01-02T03:04')).toBe('2026-01-02T03:04:00Z');
    expect(timeInput('2026-01-02T03:04:05')).toBe('2026-01-02T03:04:05Z');
    expect(timeInput('2026-01-02')).toBe('2026-01-02');
    expect(timeInput(undefined)).toBeUndefined();
  });

  test('the chart: 24 slots, bars scaled to a round maximum, empty hours at zero', () => {
    expect([0, 3, 5, 7, 12, 99, 101].map(niceMax)).toEqual([5, 5, 5, 10, 20, 100, 200]);
    // hour 60 is older than the 24 hours shown
    const chart = decisionChart([{ hour: 100, issued: 10, denied: 5 }, { hour: 60, issued: 1, denied: 0 }], 100);
    expect(chart.bars).toHaveLength(48);
    const last = chart.bars.slice(-2);
    expect(last.map((b) => b.kind)).toEqual(['issued', 'denied']);
    expect(last[0]!.height).toBeCloseTo(164, 0);
    expect(last[1]!.height).toBeCloseTo(82, 0);
    expect(chart.bars.slice(0, 2).every((b) => b.height === 0)).toBe(true);
    expect(chart.issued).toBe(10);
    expect(chart.denied).toBe(5);
    expect(chart.grid.map((g) => g.label.text)).toEqual(['0', '5', '10']);
  });
});
