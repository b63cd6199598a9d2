import { basic, signIn } from './helpers/browser.ts';
import { exchange, TODO_ADMIN_MCP, TODO_AS } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let alice: Awaited<ReturnType<typeof signIn>>;
let bob: Awaited<ReturnType<typeof signIn>>;

beforeAll(async () => {
  idjag = await startTestServer();
  alice = await signIn(idjag.url, {});
  bob = await signIn(idjag.url, { username: 'bob', password: 'bob' });
  // an issued one with a scope the server does not define, a policy denial, and one sent with client_secret_post
  expect((await exchange(idjag.url, alice.tokens.id_token, { scope: 'todos.read made.up' })).status).toBe(200);
  expect((await exchange(idjag.url, bob.tokens.id_token)).status).toBe(400);
  expect((await exchange(idjag.url, alice.tokens.id_token, { resource: undefined, client_id: 'demo-agent', client_secret: 'demo-agent-secret' }, null)).status).toBe(400);
});
afterAll(() => idjag.dispose());

const view = (clientId: string, auth?: string, query = '?format=json') =>
  fetch(`${idjag.url}/conformance/clients/${clientId}${query}`, { headers: auth ? { authorization: auth } : {} });

test('a client sees its own attempts, newest first, with every check and the warnings', async () => {
  const res = await view('demo-agent', basic('demo-agent', 'demo-agent-secret'));
  expect(res.status).toBe(200);
  expect(res.headers.get('cache-control')).toBe('no-store');
  const { attempts } = await res.json() as { attempts: any[] };
  expect(attempts).toHaveLength(3);
  const [postNoResource, denied, issued] = attempts;

  expect(issued).toMatchObject({ decision: 'issued', error: null, failed_check: null, scopes_granted: 'todos.read' });
  expect(issued.checks.every((c: { status: string }) => c.status === 'passed')).toBe(true);
  expect(issued.checks.map((c: { name: string }) => c.name)).toEqual(expect.arrayContaining(['client_authentication', 'id_token.signature', 'id_token.audience', 'policy', 'scope', 'issue']));
  expect(issued.checks.find((c: { name: string }) => c.name === 'id_token.audience').section).toMatch(/§4\.3\.3/);
  expect(issued.warnings.map((w: { code: string }) => w.code)).toEqual(['scope_not_defined']);
  expect(issued.warnings[0].message).toContain('made.up');

  expect(denied).toMatchObject({ decision: 'denied', error: 'invalid_target', failed_check: 'policy' });
  expect(denied.message).toMatch(/may not use client demo-agent/);
  expect(denied.checks.filter((c: { status: string }) => c.status === 'not_reached').map((c: { name: string }) => c.name)).toEqual(['scope', 'step_up', 'issue']);

  expect(postNoResource.warnings.map((w: { code: string }) => w.code)).toEqual(expect.arrayContaining(['resource_omitted', 'client_secret_post']));

  // nothing of the policy: no rule ids, no groups, no admin explanations
  const text = JSON.stringify(attempts);
  expect(text).not.toMatch(/engineering|explanation|rule_id/);
});

test('the same view as HTML, escaped', async () => {
  const res = await view('demo-agent', basic('demo-agent', 'demo-agent-secret'), '');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/text\/html/);
  const html = await res.text();
  expect(html).toContain('<code>id_token.signature</code>');
  expect(html).toContain('scope_not_defined');
  expect(html).not.toMatch(/engineering/);
});

test('no credentials, wrong ones, or another client\'s: refused', async () => {
  const none = await view('demo-agent');
  expect(none.status).toBe(401);
  expect(none.headers.get('www-authenticate')).toMatch(/^Basic /);
  expect((await view('demo-agent', basic('demo-agent', 'wrong'))).status).toBe(401);
  expect((await view('demo-public', basic('demo-public', 'anything'))).status).toBe(401);
  const other = await view('demo-agent', basic('partner-app', 'partner-app-secret'));
  expect(other.status).toBe(403);
  expect(await other.json()).toMatchObject({ error: 'access_denied' });
});

test('an audience alias and an audience-only request are flagged', async () => {
  await exchange(idjag.url, alice.tokens.id_token, { audience: 'urn:example:todo', resource: TODO_ADMIN_MCP });
  const { attempts } = await (await view('demo-agent', basic('demo-agent', 'demo-agent-secret'), '?format=json&limit=1')).json() as { attempts: any[] };
  expect(attempts).toHaveLength(1);
  expect(attempts[0].audience).toBe('urn:example:todo');
  expect(attempts[0].warnings.map((w: { code: string }) => w.code)).toContain('audience_alias');
  expect(attempts[0].warnings.find((w: { code: string }) => w.code === 'audience_alias').message).toContain(TODO_AS);
});
