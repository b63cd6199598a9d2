import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { Sessions } from '../src/playground/session.ts';
import { localSessions } from '../src/cluster/index.ts';
import { connectAdmin } from './helpers/admin.ts';
import { AdminUi, follow, text, type Page } from './helpers/admin-ui.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

/**
 * The playground over plain HTTP (a cookie jar, no JavaScript), as a browser without scripts uses it: the four
 * steps against the real token endpoint, demo AS and demo MCP server; a denied exchange stops the flow with the
 * admin's explanation and the rule; bad input is refused with nothing sent; secrets never reach the page. The
 * same flow in chromium is test/playground-browser.test.ts.
 */

let idjag: TestServer;
let demoAs: string;
let demoMcp: string;

beforeAll(async () => {
  idjag = await startTestServer();
  demoAs = `${idjag.issuer}/demo/as`;
  demoMcp = `${idjag.issuer}/demo/mcp`;
});

afterAll(async () => {
  await idjag?.dispose();
});

const auditCount = async () => Number((await idjag.database.db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

/** A browser on the playground, signed in as `username` through idjag's login page. */
async function signedIn(username: string): Promise<{ ui: AdminUi; page: Page }> {
  const ui = new AdminUi(idjag.url);
  const start = await ui.open('/playground');
  expect(start.status).toBe(200);
  expect(start.html).toContain('Not reached: sign in first.');
  const res = await ui.post('/playground/sign-in');
  expect(res.status).toBe(303);
  const auth = new URL(res.headers.get('location')!, idjag.url);
  expect(auth.pathname).toBe('/auth');
  expect(auth.searchParams.get('client_id')).toBe('demo-agent');
  expect(auth.searchParams.get('redirect_uri')).toBe(`${idjag.issuer}/playground/callback`);
  expect(auth.searchParams.get('prompt')).toBe('login');
  expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
  const page = await follow(ui.browser, auth.href, { username, password: username });
  ui.csrf = /name="_csrf" value="([^"]+)"/.exec(page.html)![1]!;
  return { ui, page };
}

/** The text of the first element carrying `attribute` (a data-* marker of the view). */
const marked = (html: string, attribute: string) => new RegExp(`${attribute}[^>]*>([^<]*)<`).exec(html)?.[1];

describe('the whole flow, as alice', () => {
  let ui: AdminUi;

  test('step 1: the real login page, then the ID Token decoded and verified', async () => {
    const { ui: signedInUi, page } = await signedIn('alice');
    ui = signedInUi;
    expect(page.status).toBe(200);
    expect(new URL(page.url).pathname).toBe('/playground');
    expect(marked(page.html, 'data-signed-in-as')).toBe('alice');
    for (const check of ['signature', 'iss', 'aud', 'exp', 'iat', 'nonce']) {
      expect(page.html).toMatch(new RegExp(`<tr class="check passed" data-verify="${check}">`));
    }
    expect(text(page.html)).toContain('"email": "alice@example.com"');
    expect(text(page.html)).toContain('Redeem the code (authorization_code grant, with the PKCE verifier)');
    expect(text(page.html)).toContain('Basic base64(demo-agent:***)');
    expect(page.html).toContain('Send the token exchange');
  });

  test('step 2: the exchange, its request and answer, the decoded ID-JAG, and the decision the audit log holds', async () => {
    const before = await auditCount();
    const page = await ui.submit('/playground/exchange', { audience: demoAs, resource: demoMcp, scope: ['todos.read', 'todos.write'] });
    expect(page.status).toBe(200);
    expect(await auditCount()).toBe(before + 1);
    const html = text(page.html);
    expect(html).toContain('<div class="decision-box issued" data-decision="issued">');
    expect(html).toContain('<a class="rule-link" href="/admin/rules/engineering-demo-todo/edit">engineering-demo-todo</a>');
    expect(html).toContain(`"aud": "${demoAs}"`);
    expect(html).toContain('"client_id": "demo-agent-at-todo"');
    expect(html).toContain('"typ": "oauth-id-jag+jwt"');
    expect(html).toMatch(/<tr class="check passed" data-check="policy">/);
    expect(html).not.toMatch(/<tr class="check failed"/);
    // the real request: the grant's parameters, the client authenticated with Basic, the subject token shortened
    expect(html).toContain('<th>grant_type</th><td><code>urn:ietf:params:oauth:grant-type:token-exchange</code>');
    expect(html).toMatch(/<th>subject_token<\/th><td><code>eyJ[^<]*…\(JWT, \d+ chars\)<\/code>/);
    // the audit row is this very request's: the playground sent it with its own X-Request-Id
    const row = await idjag.database.db.selectFrom('audit_log').select(['request_id', 'decision', 'client_id']).orderBy('at', 'desc').limit(1).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ decision: 'issued', client_id: 'demo-agent' });
    expect(row.request_id).toMatch(/^playground-[0-9a-f-]{36}$/);
    expect(html).toContain(row.request_id);
  });

  test('copy as curl: the same request as a shell command, with the client secret read from the environment', async () => {
    const page = await ui.open('/playground');
    const curls = [...text(page.html).matchAll(/<pre class="curl-command">([^<]*)<\/pre>/g)].map((m) => m[1]!);
    // one per request so far: code redemption, JWKS, token exchange
    expect(curls).toHaveLength(3);
    const exchangeCurl = curls[2]!;
    expect(exchangeCurl).toContain(`curl -sS -X POST '${idjag.url}/token'`);
    expect(exchangeCurl).toContain('-u "demo-agent:${DEMO_AGENT_SECRET:?set DEMO_AGENT_SECRET to the client secret}"');
    expect(exchangeCurl).toContain("--data-urlencode 'requested_token_type=urn:ietf:params:oauth:token-type:id-jag'");
    expect(exchangeCurl).toMatch(/--data-urlencode 'subject_token=eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+'/);
    expect(exchangeCurl).toContain(`--data-urlencode 'resource=${demoMcp}'`);
    expect(exchangeCurl).toContain("--data-urlencode 'scope=todos.read todos.write'");
  });

  test('step 3: the ID-JAG at the demo AS found through its metadata, the access token decoded, the tools listed', async () => {
    const page = await ui.submit('/playground/present');
    expect(page.status).toBe(200);
    const html = text(page.html);
    expect(html).toContain(`<code>GET ${idjag.url}/.well-known/oauth-authorization-server/demo/as</code>`);
    expect(html).toContain(`<code>POST ${idjag.url}/demo/as/token</code>`);
    expect(html).toContain('Basic base64(demo-agent-at-todo:***)');
    expect(html).toContain('"typ": "at+jwt"');
    expect(html).toContain(`"aud": "${demoMcp}"`);
    expect(html).toContain('<form method="post" action="/playground/call" class="tool" data-tool="list_todos">');
    expect(html).toContain('<form method="post" action="/playground/call" class="tool" data-tool="add_todo">');
  });

  test('step 4: tools called with the access token; their results name the user the IdP signed in', async () => {
    let page = await ui.submit('/playground/call', { tool: 'add_todo', 'arg[text]': 'Buy milk' });
    expect(page.status).toBe(200);
    expect(text(page.html)).toMatch(/<pre class="tool-result">Added "Buy milk" to the todo list of alice@example.com/);
    page = await ui.submit('/playground/call', { tool: 'list_todos' });
    const results = [...text(page.html).matchAll(/<pre class="tool-result">([^<]*)<\/pre>/g)].map((m) => m[1]!);
    expect(results).toHaveLength(2);
    expect(results[0]).toContain('Buy milk');
    expect(text(page.html)).toContain('Bearer eyJ');
  });

  test('an ID-JAG is accepted once: presenting it again stops at step 3 with the AS\'s answer', async () => {
    const page = await ui.submit('/playground/present');
    expect(text(page.html)).toMatch(/<div class="stop" role="alert"><strong>The flow stops here.<\/strong> The Resource AS refused the ID-JAG: invalid_grant: this ID-JAG \(jti [^)]+\) was already used/);
    expect(page.html).toContain('Not reached: step 3 must issue an access token first.');
  });

  test('no client secret, password or whole token in any page', async () => {
    const page = await ui.open('/playground');
    const shown = page.html.replace(/<pre class="curl-command">[^<]*<\/pre>/g, '');
    for (const secret of ['demo-agent-secret', 'demo-agent-at-todo-secret', 'name="password"']) expect(page.html).not.toContain(secret);
    // outside the curl commands, every JWT is shortened
    expect(shown).not.toMatch(/eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}/);
    expect(page.headers.get('cache-control')).toBe('no-store');
    // the script is a file of its own: the CSP allows no inline script
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(page.html).toContain('<script src="/assets/playground.js" defer></script>');
    expect(page.html).not.toMatch(/<script(?![^>]*\bsrc=)/);
  });
});

describe('a denied exchange stops the flow', () => {
  test('bob: invalid_target, the reason an admin sees, the rule that decided, and nothing further', async () => {
    const { ui } = await signedIn('bob');
    const page = await ui.submit('/playground/exchange', { audience: demoAs, resource: demoMcp, scope: 'todos.read' });
    expect(page.status).toBe(200);
    const html = text(page.html);
    expect(html).toContain('<div class="decision-box denied" data-decision="denied">');
    expect(html).toContain('<code>subject_not_allowed</code>');
    expect(html).toMatch(/<div class="stop" role="alert"><strong>The flow stops here.<\/strong> idjag refused the exchange: invalid_target: /);
    expect(html).toMatch(/The reason an admin sees: rules engineering-demo-todo for client demo-agent and MCP server \S+ do not include user/);
    expect(html).toContain('<a class="rule-link" href="/admin/rules/engineering-demo-todo/edit">rule engineering-demo-todo</a>');
    expect(html).toMatch(/<tr class="check failed" data-check="policy">/);
    expect(html).toContain('Not reached: step 2 must issue an ID-JAG first.');
    expect(html).not.toContain('id="present"');

    // and a hand-made POST to step 3 sends nothing
    const present = await ui.submit('/playground/present');
    expect(text(present.html)).toContain('There is no ID-JAG to present: step 2 must issue one first.');
    expect(present.html).not.toContain('demo/as/token</code>');
  });

  test('a Resource AS of the catalog with no server behind it: issued, but step 3 explains why it cannot go on', async () => {
    const { ui } = await signedIn('alice');
    const page = await ui.submit('/playground/exchange', { audience: 'https://auth.todo.example', resource: 'https://mcp.todo.example/mcp', scope: 'todos.read' });
    expect(page.html).toContain('data-decision="issued"');
    expect(page.html).toContain('<a class="rule-link" href="/admin/rules/engineering-todo/edit">engineering-todo</a>');
    const present = await ui.submit('/playground/present');
    expect(text(present.html)).toContain(`This ID-JAG is for https://auth.todo.example. Only the demo Resource AS (${demoAs}) runs here`);
  });

  test('no rule at all: the link goes to the rules of this client for that target', async () => {
    const { ui } = await signedIn('alice');
    const page = await ui.submit('/playground/exchange', { audience: 'https://auth.todo.example', resource: 'https://mcp.todo.example/admin', scope: 'todos.admin' });
    expect(page.html).toContain('<code>no_rule</code>');
    expect(text(page.html)).toContain('href="/admin/rules?client_id=demo-agent&resource=https%3A%2F%2Fmcp.todo.example%2Fadmin"');
  });
});

describe('bad input is refused and sends nothing', () => {
  let ui: AdminUi;
  beforeAll(async () => {
    ({ ui } = await signedIn('alice'));
  });

  test('a form without its CSRF token: 403, nothing sent', async () => {
    const before = await auditCount();
    const res = await ui.post('/playground/exchange', { _csrf: 'forged', audience: demoAs });
    expect(res.status).toBe(403);
    expect(await res.text()).toContain('Form expired');
    expect(await auditCount()).toBe(before);
  });

  test('an invalid scope or a missing audience: 400 with the reason, nothing sent', async () => {
    const before = await auditCount();
    const bad = await ui.submit('/playground/exchange', { audience: demoAs, resource: demoMcp, scope: 'todos."read' });
    expect(bad.status).toBe(400);
    expect(text(bad.html)).toContain('"todos."read" is not a valid scope (RFC 6749 §3.3).');
    const none = await ui.submit('/playground/exchange', { audience: '', resource: demoMcp });
    expect(none.status).toBe(400);
    expect(none.html).toContain('Choose a Resource AS (audience).');
    expect(await auditCount()).toBe(before);
  });

  test('a tool call before any access token, or to a tool that does not exist: 400', async () => {
    const early = await ui.submit('/playground/call', { tool: 'list_todos' });
    expect(early.status).toBe(400);
    expect(early.html).toContain('There is no access token to call a tool with: complete step 3 first.');
    await ui.submit('/playground/exchange', { audience: demoAs, resource: demoMcp, scope: 'todos.read' });
    await ui.submit('/playground/present');
    const unknown = await ui.submit('/playground/call', { tool: 'drop_tables' });
    expect(unknown.status).toBe(400);
    expect(text(unknown.html)).toContain('The MCP server has no tool named "drop_tables".');
  });

  test('a token with todos.read only: add_todo is refused by the MCP server with insufficient_scope', async () => {
    const page = await ui.submit('/playground/call', { tool: 'add_todo', 'arg[text]': 'not allowed' });
    expect(page.status).toBe(200);
    expect(text(page.html)).toMatch(/<div class="tool-call failed" data-call="add_todo">[\s\S]*HTTP 403: Bearer error="insufficient_scope"/);
  });

  test('a callback that answers no sign-in started here is refused and changes nothing', async () => {
    const before = (await ui.open('/playground')).html.match(/data-signed-in-as>[^<]*</)?.[0];
    const page = await follow(ui.browser, `${idjag.url}/playground/callback?code=abc&state=forged`);
    expect(page.status).toBe(400);
    expect(page.html).toContain('This callback does not answer a sign-in started here');
    expect(page.html.match(/data-signed-in-as>[^<]*</)?.[0]).toBe(before);
    expect(before).toBe('data-signed-in-as>alice<');
  });

  test('an unknown playground page is a 404 page', async () => {
    const res = await ui.browser.get(`${idjag.url}/playground/nothing-here`);
    expect(res.status).toBe(404);
    expect(await res.text()).toContain('There is no playground page at this address.');
  });

  test('a client without the playground\'s redirect URI (a database seeded earlier): 409 saying how to fix it', async () => {
    const api = await connectAdmin(idjag.url);
    const client = (await api.get('/clients/demo-agent')).body;
    expect((await api.patch('/clients/demo-agent', { redirect_uris: ['http://127.0.0.1:8976/callback'] })).status).toBe(200);
    try {
      const res = await ui.post('/playground/sign-in');
      expect(res.status).toBe(409);
      expect(text(await res.text())).toContain(`does not list the redirect URI ${idjag.issuer}/playground/callback: run npm run seed`);
    } finally {
      expect((await api.patch('/clients/demo-agent', { redirect_uris: client.redirect_uris })).status).toBe(200);
    }
  });
});

test('no playground in production, nor without the demo parties', async () => {
  // production mode needs an https issuer; the server is reached at its own address all the same
  for (const overrides of [{ production: true, issuer: 'https://idp.example.test' }, { demo: false }]) {
    const other = await startTestServer(overrides);
    try {
      const res = await fetch(`${other.url}/playground`);
      expect(res.status).toBe(404);
      expect(await res.text()).not.toContain('Playground');
    } finally {
      await other.dispose();
    }
  }
});

describe('the session store', () => {
  let server: Server;
  let base: string;
  const sessions = new Sessions<{ n: number }>(() => ({ n: 0 }), localSessions({ max: 2, ttlMs: 60_000 }));

  beforeAll(async () => {
    const app = new Koa({ keys: ['a-test-cookie-key-0123456789'] });
    app.use(async (ctx) => {
      const s = ctx.path.endsWith('/reset') ? await sessions.reset(ctx) : await sessions.open(ctx);
      s.state.n += 1;
      await s.save();
      ctx.body = String(s.state.n);
    });
    server = createServer(app.callback());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/playground`;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  const visit = async (cookie: string | undefined, path = '') => {
    const res = await fetch(`${base}${path}`, { headers: cookie ? { cookie } : {} });
    const set = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
    return { n: Number(await res.text()), cookie: set || cookie };
  };

  test('keeps each browser\'s state by a signed id, evicts the least recently used past its bound, and resets', async () => {
    const a = await visit(undefined);
    expect((await visit(a.cookie)).n).toBe(2);
    // a tampered id is a new session
    expect((await visit(a.cookie!.replace(/idjag\.playground=[^;]+/, 'idjag.playground=AAAA'))).n).toBe(1);
    const b = await visit(undefined);
    const c = await visit(undefined);
    // a was the least recently used: gone
    expect((await visit(a.cookie)).n).toBe(1);
    expect((await visit(c.cookie)).n).toBe(2);
    expect((await visit(b.cookie)).n).toBe(1);
    expect((await visit(c.cookie, '/reset')).n).toBe(1);
  });
});
