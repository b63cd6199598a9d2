import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { AS_CASES } from '../src/conformance/as-kit.ts';
import { loadConfig } from '../src/config/index.ts';
import { DEMO_AS_CLIENT } from '../src/demo/seeded.ts';
import { startIdjag, type Idjag } from '../src/main.ts';
import { adminSignIn, AdminUi, fieldError, text, type Page } from './helpers/admin-ui.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { startTestServer } from './helpers/server.ts';

/**
 * /admin/conformance: the Resource AS conformance kit run from the admin UI, against the demo AS this test
 * server serves (with the right and a wrong client secret) and against a fake AS that counts what reaches it
 * and echoes the credentials it was sent.
 */

const PATH = '/admin/conformance';
const SECRET = DEMO_AS_CLIENT.clientSecret;
const WRONG_SECRET = 'wrong-secret-7f3a9c';
const ECHOED_SECRET = 'echo-me-secret-5d1e';

/** every log line this idjag writes, at debug level, to check what was (not) logged */
const logLines: string[] = [];
let idjag: Idjag;
let home: TestDatabase;
let ui: AdminUi;
let fake: FakeAs;

interface FakeAs {
  url: string;
  requests: { method: string; url: string; authorization: string | undefined }[];
  close(): Promise<void>;
}

/** An AS that rejects everything, echoing the client credentials it was sent back in its error_description. */
async function startFakeAs(): Promise<FakeAs> {
  const requests: FakeAs['requests'] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    requests.push({ method: req.method!, url: req.url!, authorization: req.headers.authorization });
    req.resume();
    const basic = (req.headers.authorization ?? '').replace(/^Basic /, '');
    const decoded = Buffer.from(basic, 'base64').toString();
    res.writeHead(req.method === 'POST' ? 401 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'invalid_client', error_description: `no client ${decoded} (Basic ${basic})` }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, requests, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

beforeAll(async () => {
  home = await createTestDatabase('idjag-test');
  const config = loadConfig([], {}, { port: 0, host: '127.0.0.1', database: home.location, logLevel: 'debug' });
  const log = pino({ level: 'debug' }, { write: (line: string) => { logLines.push(line); } });
  idjag = await startIdjag(config, { log });
  ui = await adminSignIn(idjag.url);
  fake = await startFakeAs();
});

afterAll(async () => {
  await fake?.close();
  await idjag?.close();
  await home?.dispose();
});

const demo = () => idjag.demo!;
const demoForm = (secret: string) => ({
  token_endpoint: `${idjag.url}/demo/as/token`, issuer: demo().asIssuer, client_id: DEMO_AS_CLIENT.clientId,
  client_secret: secret, resource: demo().mcpResource, scope: '',
});
const fakeForm = (secret = ECHOED_SECRET) => ({
  token_endpoint: `${fake.url}/token`, issuer: fake.url, client_id: 'fake-client', client_secret: secret, resource: '', scope: 'a b',
});
/** The demo AS remembers the jti of every ID-JAG it accepted: a run that reached it with the right secret adds rows. */
const demoJtis = async () => Number((await idjag.database.db.selectFrom('demo_jti').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

/** The report's rows: case id and verdict, in page order. */
const verdicts = (html: string) => [...html.matchAll(/<tr class="check [a-z]+" id="case-[^"]+" data-case="([^"]+)" data-verdict="(PASS|FAIL)">/g)].map((m) => [m[1], m[2]]);
const row = (html: string, id: string) => {
  const start = html.indexOf(`data-case="${id}"`);
  expect(start).toBeGreaterThan(0);
  return html.slice(start, html.indexOf('</tr>', start));
};
const inputValue = (html: string, name: string) => new RegExp(`<input id="${name}" name="${name}" type="[a-z]+" value="([^"]*)"`).exec(html)?.[1];
const summary = (html: string) => text(/<p class="kit-summary" id="kit-summary">([^<]*)<\/p>/.exec(html)?.[1] ?? '');

async function run(fields: Record<string, string>): Promise<Page> {
  await ui.open(PATH);
  return ui.submit(PATH, fields);
}

describe('the page', () => {
  test('is in the admin nav and prefilled with the local demo AS, the secret left empty; it says where requests go from', async () => {
    const page = await ui.open(PATH);
    expect(page.status).toBe(200);
    expect(page.html).toContain('<h1>Resource AS conformance</h1>');
    expect(page.html).toMatch(/<a href="\/admin\/conformance" aria-current="page">AS conformance<\/a>/);
    expect(page.html).toContain('<form method="post" action="/admin/conformance"');
    expect(inputValue(page.html, 'token_endpoint')).toBe(`${idjag.url}/demo/as/token`);
    expect(inputValue(page.html, 'issuer')).toBe(demo().asIssuer);
    expect(inputValue(page.html, 'client_id')).toBe(DEMO_AS_CLIENT.clientId);
    expect(inputValue(page.html, 'client_secret')).toBe('');
    expect(inputValue(page.html, 'resource')).toBe(demo().mcpResource);
    expect(inputValue(page.html, 'scope')).toBe('todos.read todos.write');
    expect(page.html).not.toContain(SECRET);
    expect(page.html).toContain("The requests go from the IdP's host (this server)");
    // other admin pages link to it
    expect((await ui.open('/admin')).html).toContain('<a href="/admin/conformance">AS conformance</a>');
  });

  test('without the demo running, nothing is prefilled', async () => {
    const bare = await startTestServer({ demo: false });
    try {
      const page = await (await adminSignIn(bare.url)).open(PATH);
      expect(page.status).toBe(200);
      for (const name of ['token_endpoint', 'issuer', 'client_id', 'client_secret', 'resource', 'scope']) expect(inputValue(page.html, name)).toBe('');
      expect(page.html).not.toContain('/demo/as');
    } finally {
      await bare.dispose();
    }
  });
});

describe('running the kit against the demo AS', () => {
  test('with the right secret: every case PASS, CONFORMANT, the secret nowhere in the page or the log', async () => {
    const before = await demoJtis();
    const page = await run(demoForm(SECRET));
    expect(page.status).toBe(200);
    expect(verdicts(page.html)).toEqual(AS_CASES.map((c) => [c.id, 'PASS']));
    expect(summary(page.html)).toBe(`${AS_CASES.length} cases: ${AS_CASES.length} passed, 0 failed. CONFORMANT`);
    expect(page.html).toContain('<span class="badge passed">CONFORMANT</span>');
    // per case: title, expected, actual, what the AS said, section
    const valid = text(row(page.html, 'valid'));
    expect(valid).toContain('a valid ID-JAG is exchanged for an access token');
    expect(valid).toMatch(/<td>accepted<\/td>\s*<td>accepted \(200\)/);
    expect(valid).toContain('access token issued, scope "todos.read todos.write"');
    expect(valid).toContain('draft §4.4; RFC 7523 §2.1');
    const replay = text(row(page.html, 'jti-replay'));
    expect(replay).toMatch(/<td>rejected<\/td>\s*<td>rejected \(400 invalid_grant\)<br><span class="muted">first presentation: 200<\/span>/);
    expect(replay).toMatch(/<code>invalid_grant<\/code> this ID-JAG \(jti [0-9a-f-]+\) was already used/);
    expect(text(row(page.html, 'iat-future'))).toContain('<span class="badge info">advisory</span>');
    // the target and the IdP, the ID-JAGs signed by idjag itself
    expect(text(page.html)).toContain(`<dt>ID-JAGs from</dt><dd><code>${idjag.issuer}</code>`);
    // the valid ID-JAG and the replay's first presentation were accepted: the demo AS was really reached
    expect(await demoJtis()).toBe(before + 2);
    // the form comes back as typed, but for the secret; no token is shown whole
    expect(inputValue(page.html, 'issuer')).toBe(demo().asIssuer);
    expect(inputValue(page.html, 'client_secret')).toBe('');
    expect(page.html).not.toContain(SECRET);
    expect(page.html).not.toMatch(/eyJ[\w-]{20,}\.[\w-]{20,}\./);
    const logged = logLines.join('');
    expect(logged).toContain('"event":"admin.conformance_run"');
    expect(logged).not.toContain(SECRET);
    expect(logged).not.toContain(Buffer.from(`${DEMO_AS_CLIENT.clientId}:${SECRET}`).toString('base64'));
  });

  test('with a wrong secret: the valid case (and the replay it depends on) FAIL, NOT CONFORMANT, with the reason', async () => {
    const before = await demoJtis();
    const page = await run(demoForm(WRONG_SECRET));
    expect(page.status).toBe(200);
    expect(verdicts(page.html)).toEqual(AS_CASES.map((c) => [c.id, ['valid', 'jti-replay'].includes(c.id) ? 'FAIL' : 'PASS']));
    expect(summary(page.html)).toMatch(new RegExp(`^${AS_CASES.length} cases: ${AS_CASES.length - 2} passed, 2 failed \\(2 required\\), \\d+ warnings\\. NOT CONFORMANT$`));
    expect(page.html).toContain('<span class="badge failed">NOT CONFORMANT</span>');
    const valid = text(row(page.html, 'valid'));
    expect(valid).toMatch(/<td>accepted<\/td>\s*<td>rejected \(401 invalid_client\)/);
    expect(valid).toContain('<code>invalid_client</code>');
    expect(text(row(page.html, 'typ-wrong'))).toMatch(/warning: error "invalid_client"; the draft and RFC 7523 §3.1 name "invalid_grant"/);
    expect(text(page.html)).toContain('the valid ID-JAG was rejected');
    expect(await demoJtis()).toBe(before);
    expect(page.html).not.toContain(WRONG_SECRET);
    expect(logLines.join('')).not.toContain(WRONG_SECRET);
  });
});

describe('what the page refuses', () => {
  test('without a CSRF token (or with a stale one): 403, and no request leaves for the AS', async () => {
    const jtis = await demoJtis();
    const seen = fake.requests.length;
    await ui.open(PATH);
    for (const fields of [demoForm(SECRET), fakeForm()]) {
      const missing = await ui.post(PATH, { ...fields, _csrf: '' });
      expect(missing.status).toBe(403);
      expect(await missing.text()).toContain('Form expired');
      const stale = await ui.post(PATH, { ...fields, _csrf: 'stale-token' });
      expect(stale.status).toBe(403);
    }
    // give a request that left anyway the time to land
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(fake.requests.length).toBe(seen);
    expect(await demoJtis()).toBe(jtis);
    // the same form with the page's token does reach the fake AS: the count above can move
    const page = await run(fakeForm());
    expect(page.status).toBe(200);
    expect(fake.requests.length).toBeGreaterThan(seen);
  });

  test('invalid input: 400, each message next to its field, nothing sent, the secret not echoed', async () => {
    const seen = fake.requests.length;
    const page = await run({
      token_endpoint: 'ftp://127.0.0.1/token', issuer: '/relative', client_id: '', client_secret: ECHOED_SECRET,
      resource: `${fake.url}/mcp#fragment`, scope: 'ok "quoted"',
    });
    expect(page.status).toBe(400);
    expect(page.html).toContain('The kit did not run');
    expect(text(fieldError(page.html, 'token_endpoint') ?? '')).toMatch(/absolute http:\/\/ or https:\/\/ URL/);
    expect(text(fieldError(page.html, 'issuer') ?? '')).toMatch(/absolute http:\/\/ or https:\/\/ URL/);
    expect(fieldError(page.html, 'client_id')).toBe('enter the client id');
    expect(text(fieldError(page.html, 'resource') ?? '')).toMatch(/without a fragment/);
    expect(text(fieldError(page.html, 'scope') ?? '')).toMatch(/RFC 6749 §3.3/);
    expect(fieldError(page.html, 'client_secret')).toBeUndefined();
    expect(page.html).not.toContain('<section class="panel kit-report"');
    // typed values come back, the secret does not
    expect(inputValue(page.html, 'token_endpoint')).toBe('ftp://127.0.0.1/token');
    expect(inputValue(page.html, 'client_secret')).toBe('');
    expect(page.html).not.toContain(ECHOED_SECRET);
    expect(fake.requests.length).toBe(seen);

    const noSecret = await run({ ...fakeForm(), client_secret: '' });
    expect(noSecret.status).toBe(400);
    expect(fieldError(noSecret.html, 'client_secret')).toBe('enter the client secret');
    expect(fieldError(noSecret.html, 'token_endpoint')).toBeUndefined();
    expect(fake.requests.length).toBe(seen);
  });

  test('an AS that echoes the credentials back: the report shows them redacted', async () => {
    const page = await run(fakeForm());
    expect(page.status).toBe(200);
    // the fake AS really got the secret (in the Basic header) and really answered with it
    const last = fake.requests.at(-1)!;
    expect(Buffer.from(last.authorization!.replace(/^Basic /, ''), 'base64').toString()).toBe(`fake-client:${ECHOED_SECRET}`);
    expect(verdicts(page.html).find(([id]) => id === 'valid')).toEqual(['valid', 'FAIL']);
    expect(text(row(page.html, 'valid'))).toContain('no client fake-client:[redacted] (Basic [redacted])');
    expect(page.html).not.toContain(ECHOED_SECRET);
    expect(page.html).not.toContain(Buffer.from(`fake-client:${ECHOED_SECRET}`).toString('base64'));
    expect(logLines.join('')).not.toContain(ECHOED_SECRET);
  });

  test('someone signed in who is not an admin gets no page, and their post sends nothing', async () => {
    const seen = fake.requests.length;
    const alice = new AdminUi(idjag.url);
    const page = await alice.open(PATH, { username: 'alice', password: 'alice' });
    expect(page.status).toBe(403);
    expect(page.html).toContain('Not an administrator');
    expect(page.html).not.toContain('Resource AS conformance');
    expect(page.html).not.toContain('name="client_secret"');
    const post = await alice.post(PATH, fakeForm());
    expect(post.status).toBe(303);
    expect(post.headers.get('location')).toBe('/admin/login');
    // nobody signed in at all: sent to sign in
    const anonymous = await new AdminUi(idjag.url).browser.get(`${idjag.url}${PATH}`);
    expect(anonymous.status).toBe(303);
    expect(anonymous.headers.get('location')).toBe('/admin/login?next=%2Fadmin%2Fconformance');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(fake.requests.length).toBe(seen);
  });
});
