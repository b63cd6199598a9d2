/**
 * https in production mode (the MCP extension requires https for the authorization server's and the MCP
 * server's endpoints): the configuration refuses a plain-http issuer, the server will not start without an
 * https one, and the admin (API, import, web UI) refuses a new Resource AS issuer or MCP server resource that
 * is not https, at the field. Development keeps accepting http (loopback servers).
 */
import { ConfigError, loadConfig } from '../src/config/index.ts';
import { startIdjag } from '../src/main.ts';
import { AdminUi, fieldError, text } from './helpers/admin-ui.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { Browser } from './helpers/browser.ts';
import { TODO_AS } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const ISSUER = 'https://idp.example.test';
const REFUSED = /^must be an https URL in production mode: the MCP extension requires https/;

describe('the configuration', () => {
  test.each(['http://idp.example.com', 'http://127.0.0.1:3000', 'http://localhost:3000'])('refuses the plain-http issuer %s in production, accepts it in development', (issuer) => {
    expect(() => loadConfig(['--production', '--issuer', issuer], {})).toThrow(ConfigError);
    expect(() => loadConfig([], { NODE_ENV: 'production', ISSUER: issuer })).toThrow(/issuer: in production mode the issuer must be an https URL \(got http:/);
    expect(loadConfig(['--issuer', issuer], {}).issuer).toBe(issuer);
  });

  test('an https issuer in production is accepted', () => {
    expect(loadConfig(['--production', '--issuer', ISSUER], {})).toMatchObject({ production: true, issuer: ISSUER });
  });

  test('no issuer in production: the settings load (migrate and rotate-keys need none), the server refuses to start', async () => {
    const config = loadConfig(['--production', '--database', ':memory:', '--port', '0', '--host', '127.0.0.1', '--log-level', 'silent'], {});
    expect(config.issuer).toBeUndefined();
    await expect(startIdjag(config)).rejects.toThrow(new ConfigError('in production mode the issuer must be set (ISSUER or --issuer) to the https URL clients reach idjag at'));
  });
});

describe('the admin in production mode', () => {
  let idjag: TestServer;
  let api: AdminClient;

  beforeAll(async () => {
    idjag = await startTestServer({ production: true, issuer: ISSUER });
    api = await connectAdmin(idjag.url);
  });
  afterAll(() => idjag.dispose());

  test('the seed applies: its Resource ASes and MCP servers are https under an https issuer', async () => {
    const issuers = (await api.get('/resource-servers')).body.items.map((r: { issuer: string }) => r.issuer);
    expect(issuers).toEqual(expect.arrayContaining([TODO_AS, `${ISSUER}/demo/as`]));
  });

  test.each([
    ['a plain-http issuer', 'http://auth.crm.example'],
    ['a loopback http issuer', 'http://127.0.0.1:9400/as'],
  ])('the API refuses %s and an http MCP server resource, each at its field', async (_name, issuer) => {
    const res = await api.post('/resource-servers', { issuer, name: 'CRM AS', mcp_servers: [{ resource: 'http://mcp.crm.example/mcp', name: 'CRM', scopes: ['crm.read'] }] });
    expect(res.status).toBe(400);
    expect(res.body.issues).toEqual([
      { path: ['issuer'], message: expect.stringMatching(REFUSED) },
      { path: ['mcp_servers', 0, 'resource'], message: expect.stringMatching(REFUSED) },
    ]);
    expect((await api.get('/resource-servers')).body.items.map((r: { issuer: string }) => r.issuer)).not.toContain(issuer);
  });

  test('an http MCP server added to a Resource AS is refused at its field; an https one is created', async () => {
    const todo = (await api.get('/resource-servers')).body.items.find((r: { issuer: string }) => r.issuer === TODO_AS);
    const refused = await api.post(`/resource-servers/${todo.id}/mcp-servers`, { resource: 'http://mcp.todo.example/reports', name: 'Reports', scopes: ['todos.read'] });
    expect(refused.status).toBe(400);
    expect(refused.body.issues).toEqual([{ path: ['resource'], message: expect.stringMatching(REFUSED) }]);
    const created = await api.post(`/resource-servers/${todo.id}/mcp-servers`, { resource: 'https://mcp.todo.example/reports', name: 'Reports', scopes: ['todos.read'] });
    expect(created.status).toBe(201);
    expect((await api.delete(`/mcp-servers/${created.body.id}`)).status).toBe(204);
  });

  test('an import naming a new http Resource AS or MCP server is refused whole, at its place in the document', async () => {
    const res = await api.post('/import?dry_run=1', {
      resource_servers: [
        { issuer: 'http://auth.files.example', name: 'Files AS' },
        { issuer: 'https://auth.mail.example', name: 'Mail AS', mcp_servers: [{ resource: 'http://mcp.mail.example/mcp', name: 'Mail', scopes: ['mail.read'] }] },
      ],
    });
    expect(res.status).toBe(400);
    expect(res.body.issues).toEqual([
      { path: ['resource_servers', 0, 'issuer'], message: expect.stringMatching(REFUSED) },
    ]);
    const mcp = await api.post('/import?dry_run=1', {
      resource_servers: [{ issuer: 'https://auth.mail.example', name: 'Mail AS', mcp_servers: [{ resource: 'http://mcp.mail.example/mcp', name: 'Mail', scopes: ['mail.read'] }] }],
    });
    expect(mcp.body.issues).toEqual([{ path: ['resource_servers', 0, 'mcp_servers', 0, 'resource'], message: expect.stringMatching(REFUSED) }]);
    const https = await api.post('/import?dry_run=1', {
      resource_servers: [{ issuer: 'https://auth.mail.example', name: 'Mail AS', mcp_servers: [{ resource: 'https://mcp.mail.example/mcp', name: 'Mail', scopes: ['mail.read'] }] }],
    });
    expect(https.status).toBe(200);
  });

  test('the web UI says so next to the issuer field', async () => {
    const ui = new AdminUi(idjag.url, new PublicOriginBrowser(ISSUER, idjag.url));
    const dashboard = await ui.open('/admin', { username: 'admin', password: 'admin' });
    expect(dashboard.html).toContain('<h1>Dashboard</h1>');
    await ui.open('/admin/servers/new');
    const refused = await ui.submit('/admin/servers', { issuer: 'http://auth.crm.example', name: 'CRM AS', enabled: 'on' });
    expect(refused.status).toBe(400);
    expect(text(fieldError(refused.html, 'issuer')!)).toMatch(REFUSED);
    expect(refused.html).toContain('value="http://auth.crm.example"');
  });
});

describe('development mode', () => {
  test('http Resource AS issuers and MCP server resources are accepted (servers on the loopback interface)', async () => {
    const dev = await startTestServer();
    try {
      const api = await connectAdmin(dev.url);
      const res = await api.post('/resource-servers', { issuer: 'http://127.0.0.1:9400/as', name: 'Local AS', mcp_servers: [{ resource: 'http://127.0.0.1:9401/mcp', name: 'Local MCP', scopes: ['x.read'] }] });
      expect(res.status).toBe(201);
    } finally {
      await dev.dispose();
    }
  });
});

/**
 * A browser for a server behind its public https origin (the sign-in returns to the issuer): requests to that
 * origin go to where the server listens. Its Secure cookies are kept there as on https (tough-cookie counts
 * the loopback address as a secure context).
 */
class PublicOriginBrowser extends Browser {
  readonly #from: string;
  readonly #to: string;

  constructor(from: string, to: string) {
    super();
    this.#from = from;
    this.#to = to;
  }

  override async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const target = url.startsWith(this.#from) ? `${this.#to}${url.slice(this.#from.length)}` : url;
    const headers = new Headers(init.headers);
    const cookie = await this.jar.getCookieString(target);
    if (cookie) headers.set('cookie', cookie);
    const res = await fetch(target, { ...init, headers, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) await this.jar.setCookie(c, target);
    return res;
  }
}
