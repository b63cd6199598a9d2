// The whole chain on one machine (docs/protocol.md, steps 1 to 4), driven by the real demo client (src/demo/client.ts,
// what `npm run demo:client` runs) with the official MCP client packages, against idjag with its demo Resource
// AS and MCP server mounted, all over real HTTP. The login form is driven with --username/--password.
import { decodeJwt } from 'jose';
import { DemoFlowError, runDemoClient, type DemoClientResult } from '../src/demo/client.ts';
import type { HttpExchange } from '../src/demo/trace.ts';
import { Browser, csrfFrom, REDIRECT_URI } from './helpers/browser.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let asIssuer: string;
let mcp: string;

beforeAll(async () => {
  idjag = await startTestServer();
  asIssuer = `${idjag.issuer}/demo/as`;
  mcp = `${idjag.issuer}/demo/mcp`;
});
afterAll(() => idjag.dispose());

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const form = (x: HttpExchange) => Object.fromEntries(new URLSearchParams(x.requestBody));
const json = (x: HttpExchange) => JSON.parse(x.responseBody) as Record<string, any>;

describe('alice (engineering): the official MCP client lists and adds todos', () => {
  let run: DemoClientResult;
  const printed: string[] = [];

  beforeAll(async () => {
    run = await runDemoClient({ issuer: idjag.issuer, username: 'alice', password: 'alice', todo: 'Ship the demo', log: (l) => printed.push(l) });
  });

  test('the tools saw alice: the sub of her ID Token, through the ID-JAG and the access token', () => {
    const sub = run.idToken.sub;
    expect(sub).toEqual(expect.any(String));
    expect(run.idJag).toMatchObject({ iss: idjag.issuer, sub, aud: asIssuer, client_id: 'demo-agent-at-todo', resource: mcp, email: 'alice@example.com' });
    expect(run.accessToken).toMatchObject({ iss: asIssuer, sub, aud: mcp, client_id: 'demo-agent-at-todo', scope: 'todos.read todos.write', email: 'alice@example.com' });

    const caller = { sub, email: 'alice@example.com', client_id: 'demo-agent-at-todo' };
    expect(run.calls.map((c) => c.tool)).toEqual(['list_todos', 'add_todo', 'list_todos']);
    const [before, added, after] = run.calls as [typeof run.calls[0], typeof run.calls[0], typeof run.calls[0]];
    expect(before.structured).toEqual({ caller, todos: [] });
    expect(added.structured).toMatchObject({ caller, added: { text: 'Ship the demo', client_id: 'demo-agent-at-todo' }, count: 1 });
    expect(after.structured).toMatchObject({ caller, todos: [{ text: 'Ship the demo' }] });
    expect(after.text).toMatch(/^Todo list of alice@example\.com \(sub [^,]+, via client demo-agent-at-todo\), 1 item\(s\):\n1\. Ship the demo$/);
  });

  test('the todo is stored under alice\'s sub at the MCP server', async () => {
    const rows = await idjag.database.db.selectFrom('demo_todos').select(['owner_sub', 'text']).execute();
    expect(rows).toEqual([{ owner_sub: run.idToken.sub, text: 'Ship the demo' }]);
  });

  test('on the wire: 401 with resource_metadata, RFC 9728 and 8414 discovery, token exchange, JWT-bearer grant, then Bearer calls', () => {
    const x = run.exchanges;
    const firstMcp = x.findIndex((e) => e.url === mcp);
    expect(x[firstMcp]).toMatchObject({ method: 'POST', authorization: undefined, status: 401 });
    expect(x[firstMcp]!.wwwAuthenticate).toContain(`resource_metadata="${idjag.issuer}/.well-known/oauth-protected-resource/demo/mcp"`);
    const after = x.slice(firstMcp + 1).map((e) => `${e.method} ${e.url} ${e.status}`);
    expect(after.slice(0, 5)).toEqual([
      `GET ${idjag.issuer}/.well-known/oauth-protected-resource/demo/mcp 200`,
      `GET ${idjag.issuer}/.well-known/oauth-authorization-server/demo/as 200`,
      `GET ${idjag.issuer}/.well-known/oauth-authorization-server 200`,
      `POST ${idjag.issuer}/token 200`,
      `POST ${asIssuer}/token 200`,
    ]);

    const tokenExchange = x.find((e) => form(e).grant_type === TOKEN_EXCHANGE)!;
    expect(form(tokenExchange)).toMatchObject({ audience: asIssuer, resource: mcp, subject_token_type: 'urn:ietf:params:oauth:token-type:id_token', client_id: 'demo-agent' });
    const jwtBearer = x.find((e) => e.url === `${asIssuer}/token`)!;
    expect(form(jwtBearer).assertion).toBe(json(tokenExchange).access_token);
    expect(jwtBearer.authorization).toBe(`Basic ${Buffer.from('demo-agent-at-todo:demo-agent-at-todo-secret').toString('base64')}`);

    const accessToken = json(jwtBearer).access_token as string;
    const authorized = x.slice(firstMcp + 1).filter((e) => e.url === mcp);
    expect(authorized.length).toBeGreaterThanOrEqual(4); // initialize, initialized, three tool calls (and maybe a GET)
    for (const e of authorized) expect(e.authorization).toBe(`Bearer ${accessToken}`);
    expect(authorized.filter((e) => e.method === 'POST').every((e) => e.status === 200 || e.status === 202)).toBe(true);
  });

  test('the printed walkthrough names every step and decodes the tokens, but never prints a whole token or secret', () => {
    const text = printed.join('\n');
    for (const heading of ['== Step 1 · Sign in at the IdP', '[step 2 · ID Token for an ID-JAG (RFC 8693 token exchange)]',
      '[step 3 · ID-JAG for an access token (RFC 7523 JWT-bearer)]', '[step 4 · MCP server]', '== Result of add_todo']) {
      expect(text).toContain(heading);
    }
    expect(text).toContain('"typ":"oauth-id-jag+jwt"');
    expect(text).toContain('"typ":"at+jwt"');
    const secrets = [
      ...run.exchanges.flatMap((e) => [form(e).subject_token, form(e).assertion, form(e).code, e.authorization?.split(' ')[1]]),
      'demo-agent-secret', 'demo-agent-at-todo-secret',
    ].filter((s): s is string => typeof s === 'string' && s.length > 8);
    expect(secrets.length).toBeGreaterThan(5);
    for (const secret of secrets) expect(text).not.toContain(secret);
    expect(text).toContain('password=***');
  });
});

test('bob (sales) is refused at the IdP with invalid_target, and the MCP server never sees a token for him', async () => {
  const printed: string[] = [];
  const failure = await runDemoClient({ issuer: idjag.issuer, username: 'bob', password: 'bob', log: (l) => printed.push(l) })
    .then(() => undefined, (err: unknown) => err);
  expect(failure).toBeInstanceOf(DemoFlowError);
  const err = failure as DemoFlowError;
  expect(err.step).toBe(2);
  expect(err.message).toMatch(/^step 2 failed: .*invalid_target/);
  expect(err.message).toMatch(/sign in as alice/);

  const refusal = err.exchanges.find((e) => form(e).grant_type === TOKEN_EXCHANGE)!;
  expect(refusal.status).toBe(400);
  expect(json(refusal)).toEqual({ error: 'invalid_target', error_description: expect.any(String) });
  expect(decodeJwt(form(refusal).subject_token!).sub).not.toBeUndefined();

  // what reached the demo parties: the unauthenticated MCP probe and discovery, nothing with a credential of bob's
  const toDemo = err.exchanges.filter((e) => e.url.startsWith(mcp) || e.url.startsWith(asIssuer));
  expect(toDemo.length).toBeGreaterThan(0);
  expect(toDemo.every((e) => e.authorization === undefined)).toBe(true);
  expect(err.exchanges.some((e) => e.url === `${asIssuer}/token`)).toBe(false);
  expect(err.exchanges.filter((e) => e.url === mcp).map((e) => e.status)).toEqual([401]);
});

test('a wrong password stops at step 1 with the login page\'s message', async () => {
  const failure = await runDemoClient({ issuer: idjag.issuer, username: 'alice', password: 'not-alice' }).then(() => undefined, (err: unknown) => err);
  expect(failure).toBeInstanceOf(DemoFlowError);
  expect((failure as DemoFlowError).step).toBe(1);
  expect((failure as DemoFlowError).message).toMatch(/the IdP refused the sign-in as alice: Wrong username or password/);
  expect((failure as DemoFlowError).exchanges.some((e) => e.url.startsWith(mcp))).toBe(false);
});

test('without --username the client prints the authorization URL and receives the browser on its loopback redirect URI', async () => {
  let shown: (url: string) => void;
  const authorizationUrl = new Promise<string>((resolve) => { shown = resolve; });
  const printed: string[] = [];
  const run = runDemoClient({
    issuer: idjag.issuer,
    todo: 'Signed in through a browser',
    browserTimeoutMs: 20_000,
    log: (line) => {
      printed.push(line);
      if (line.trim().startsWith(`${idjag.issuer}/auth?`)) shown(line.trim());
    },
  });

  // the user's browser: open the printed URL, sign in, follow the redirect to the client's listener
  const browser = new Browser();
  // a client that fails before printing the URL (port 8976 taken...) fails the test rather than hanging it
  let url = await Promise.race([authorizationUrl, run.then(() => { throw new Error('the client finished without printing a URL'); })]);
  let res = await browser.get(url);
  for (let hop = 0; hop < 10 && !url.startsWith(REDIRECT_URI); hop++) {
    if (res.status === 303 || res.status === 302) {
      url = new URL(res.headers.get('location')!, url).href;
      res = url.startsWith(REDIRECT_URI) ? await fetch(url) : await browser.get(url);
    } else {
      const page = await res.text();
      url = `${idjag.issuer}${/action="(\/interaction\/[^"]+\/login)"/.exec(page)![1]}`;
      res = await browser.postForm(url, { _csrf: csrfFrom(page), username: 'alice', password: 'alice' });
    }
  }
  expect(url).toMatch(/^http:\/\/127\.0\.0\.1:8976\/callback\?code=/);
  expect(res.status).toBe(200);
  expect(await res.text()).toMatch(/Signed in\. You can close this window/);

  const result = await run;
  expect(result.calls[1]!.structured).toMatchObject({ caller: { email: 'alice@example.com' }, added: { text: 'Signed in through a browser' } });
  expect(printed.join('\n')).toContain(`Waiting for the browser to come back to ${REDIRECT_URI}`);
});
