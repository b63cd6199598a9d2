import { setTimeout as sleep } from 'node:timers/promises';
import SQLite from 'better-sqlite3';
import { loadConfig } from '../src/config/index.ts';
import { purgeExpiredRateLimits } from '../src/throttle/index.ts';
import { ADMIN_CLI } from './helpers/admin.ts';
import { Browser, csrfFrom, DEMO_AGENT, pkce, REDIRECT_URI, tokenRequest } from './helpers/browser.ts';
import { exchange } from './helpers/exchange.ts';
import { onPostgres } from './helpers/database.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { decodeChecks } from '../src/audit/codec.ts';

interface Attempt {
  status: number;
  retryAfter: string | null;
  /** the login page's error message */
  error: string | undefined;
}

/** One sign-in attempt through the real login form, in a fresh authorization request. */
async function attempt(base: string, username: string, password: string): Promise<Attempt> {
  const browser = new Browser();
  const params = new URLSearchParams({
    client_id: 'demo-agent', response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid',
    code_challenge: pkce().challenge, code_challenge_method: 'S256', nonce: 'n', state: 's',
  });
  const start = await browser.get(`${base}/auth?${params}`);
  const page = new URL(start.headers.get('location')!, base).toString();
  const form = await browser.get(page);
  const res = await browser.postForm(`${page}/login`, { _csrf: csrfFrom(await form.text()), username, password });
  const body = await res.text();
  return { status: res.status, retryAfter: res.headers.get('retry-after'), error: /role="alert">([^<]*)</.exec(body)?.[1] };
}

const WRONG = 'Wrong username or password.';
const failN = async (base: string, username: string, n: number) => {
  const out: Attempt[] = [];
  for (let i = 0; i < n; i++) out.push(await attempt(base, username, 'not-the-password'));
  return out;
};

const loginEvents = (idjag: TestServer, username: string) => idjag.database.db.selectFrom('login_events').selectAll()
  .where('username', '=', username).orderBy('at').orderBy('id').execute();

describe('sign-in throttling per account', () => {
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer({ loginAccountFailures: 3, loginAccountBlock: 1, loginAccountBlockMax: 2, loginIpFailures: 0 });
  });
  afterAll(() => idjag.dispose());

  test('after 3 failures the next attempt is 429 even with the right password, without checking it; blocks double up to the cap; a success resets both', async () => {
    const fails = await failN(idjag.url, 'alice', 3);
    expect(fails.map((a) => [a.status, a.error])).toEqual([[401, WRONG], [401, WRONG], [401, WRONG]]);

    const blocked = await attempt(idjag.url, 'alice', 'alice');
    expect(blocked).toEqual({ status: 429, retryAfter: '1', error: 'Too many failed sign-in attempts. Try again in 1 second.' });

    // the block ends: a fresh run of attempts, and the next block doubles (2 s), then stays at the cap (2 s)
    await sleep(1100);
    expect((await failN(idjag.url, 'alice', 3)).map((a) => a.status)).toEqual([401, 401, 401]);
    expect(await attempt(idjag.url, 'alice', 'alice')).toMatchObject({ status: 429, retryAfter: '2', error: 'Too many failed sign-in attempts. Try again in 2 seconds.' });
    await sleep(2100);
    await failN(idjag.url, 'alice', 3);
    expect(await attempt(idjag.url, 'alice', 'alice')).toMatchObject({ status: 429, retryAfter: '2' });

    // after the block, the right password works
    await sleep(2100);
    expect((await attempt(idjag.url, 'alice', 'alice')).status).toBe(303);

    // the success reset the run and the backoff: 3 more failures, then a 1 s block again
    expect((await failN(idjag.url, 'alice', 3)).map((a) => a.status)).toEqual([401, 401, 401]);
    expect(await attempt(idjag.url, 'alice', 'alice')).toMatchObject({ status: 429, retryAfter: '1' });

    // every failure, throttle and success is in login_events (and nothing in the token-exchange audit log)
    const events = await loginEvents(idjag, 'alice');
    expect(events.map((e) => [e.event, e.reason, e.failures, e.retry_after])).toEqual([
      ['failed', 'wrong_password', 1, null], ['failed', 'wrong_password', 2, null], ['failed', 'wrong_password', 3, 1],
      ['throttled', 'account', null, 1],
      ['failed', 'wrong_password', 1, null], ['failed', 'wrong_password', 2, null], ['failed', 'wrong_password', 3, 2],
      ['throttled', 'account', null, 2],
      ['failed', 'wrong_password', 1, null], ['failed', 'wrong_password', 2, null], ['failed', 'wrong_password', 3, 2],
      ['throttled', 'account', null, 2],
      ['succeeded', null, null, null],
      ['failed', 'wrong_password', 1, null], ['failed', 'wrong_password', 2, null], ['failed', 'wrong_password', 3, 1],
      ['throttled', 'account', null, 1],
    ]);
    const success = events.find((e) => e.event === 'succeeded')!;
    expect(success.sub).toEqual(expect.any(String));
    expect(success).toMatchObject({ client_id: 'demo-agent', ip: expect.stringContaining('127.0.0.1'), request_id: expect.any(String) });
    expect(events.filter((e) => e.event !== 'succeeded').every((e) => e.sub === null)).toBe(true);
    const audit = await idjag.database.db.selectFrom('audit_log').select('id').execute();
    expect(audit).toEqual([]);
  });

  test('a success resets the count of failures', async () => {
    await failN(idjag.url, 'bob', 2);
    expect((await attempt(idjag.url, 'bob', 'bob')).status).toBe(303);
    // without the reset, the third of these would be the fourth attempt in the run, and refused
    expect((await failN(idjag.url, 'bob', 3)).map((a) => a.status)).toEqual([401, 401, 401]);
    expect((await attempt(idjag.url, 'bob', 'bob')).status).toBe(429);
  });

  test('an unknown user is throttled exactly like an existing one, and usernames are case-folded', async () => {
    const unknown = [...await failN(idjag.url, 'mallory', 3), await attempt(idjag.url, 'mallory', 'x')];
    const known = [...await failN(idjag.url, 'admin', 3), await attempt(idjag.url, 'admin', 'admin')];
    expect(unknown).toEqual(known);
    expect(unknown.at(-1)).toMatchObject({ status: 429, error: 'Too many failed sign-in attempts. Try again in 1 second.' });
    expect((await loginEvents(idjag, 'mallory')).map((e) => [e.event, e.reason])).toEqual([
      ['failed', 'unknown_user'], ['failed', 'unknown_user'], ['failed', 'unknown_user'], ['throttled', 'account'],
    ]);

    // ' Carol', 'CAROL' and 'carol' are one account to the throttle (so case variants buy no extra guesses)
    await attempt(idjag.url, ' Carol', 'x');
    await attempt(idjag.url, 'CAROL', 'x');
    await attempt(idjag.url, 'carol', 'x');
    expect((await attempt(idjag.url, 'cArOl', 'x')).status).toBe(429);
    expect((await loginEvents(idjag, 'carol')).map((e) => e.event)).toEqual(['failed', 'failed', 'failed', 'throttled']);
  });
});

describe('sign-in throttling per IP', () => {
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer({ loginAccountFailures: 100, loginIpFailures: 3, tokenRateLimit: 0 });
  });
  afterAll(() => idjag.dispose());

  test('unsuccessful attempts from one IP, whatever the account, block the IP for an hour; successes do not count', async () => {
    expect((await attempt(idjag.url, 'u1', 'x')).status).toBe(401);
    expect((await attempt(idjag.url, 'alice', 'alice')).status).toBe(303);
    expect((await attempt(idjag.url, 'u2', 'x')).status).toBe(401);
    // the third unsuccessful attempt (the fourth attempt: the success was not counted)
    expect((await attempt(idjag.url, 'u3', 'x')).status).toBe(401);
    const refused = await attempt(idjag.url, 'bob', 'bob');
    expect(refused.status).toBe(429);
    expect(Number(refused.retryAfter)).toBeGreaterThan(3590);
    expect(Number(refused.retryAfter)).toBeLessThanOrEqual(3600);
    expect(refused.error).toBe('Too many failed sign-in attempts. Try again in 60 minutes.');
    const throttled = await idjag.database.db.selectFrom('login_events').selectAll().where('event', '=', 'throttled').execute();
    expect(throttled).toEqual([expect.objectContaining({ username: 'bob', reason: 'ip', retry_after: Number(refused.retryAfter) })]);
  });

  test('tokenRateLimit 0 turns the token endpoint limit off', async () => {
    for (let i = 0; i < 8; i++) {
      expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, ADMIN_CLI)).status).toBe(200);
    }
  });
});

describe('token endpoint rate limit per client', () => {
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer({ tokenRateLimit: 3 });
  });
  afterAll(() => idjag.dispose());

  const credentials = () => tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, ADMIN_CLI);

  test('a client over its limit gets 429 with Retry-After; another client is unaffected; its token exchanges are audited as rate_limit', async () => {
    for (let i = 0; i < 3; i++) expect((await credentials()).status).toBe(200);
    const refused = await credentials();
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(refused.headers.get('cache-control')).toContain('no-store');
    expect(refused.body).toEqual({
      error: 'temporarily_unavailable',
      error_description: `rate limit exceeded for client idjag-admin-cli; retry after ${retryAfter} s`,
    });
    // refused from memory from now on: still 429
    expect((await credentials()).status).toBe(429);

    // demo-agent has its own budget: three token exchanges reach the grant (a bogus subject token: invalid_grant)
    for (let i = 0; i < 3; i++) {
      const res = await exchange(idjag.url, 'not-a-token');
      expect([res.status, res.body.error]).toEqual([400, 'invalid_grant']);
    }
    const throttled = await exchange(idjag.url, 'not-a-token');
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(throttled.body.error_description).toMatch(/^rate limit exceeded for client demo-agent; retry after \d+ s$/);

    const rows = await idjag.database.db.selectFrom('audit_log').selectAll().where('client_id', '=', 'demo-agent').orderBy('at').orderBy('id').execute();
    expect(rows.map((r) => r.reason)).toEqual(['id_token.format', 'id_token.format', 'id_token.format', 'rate_limit']);
    const row = rows.at(-1)!;
    expect(row).toMatchObject({ decision: 'denied', error: 'temporarily_unavailable', sub: null, audience: 'https://auth.todo.example' });
    expect(row.explanation).toMatch(/^client:demo-agent is over its limit of 3 token requests per minute/);
    const checks = decodeChecks(row.checks);
    expect(checks.slice(0, 3)).toEqual([
      { name: 'client_authentication', status: 'passed', message: 'authenticated with client_secret_basic' },
      { name: 'request_syntax', status: 'passed' },
      expect.objectContaining({ name: 'rate_limit', status: 'failed', message: throttled.body.error_description }),
    ]);
    expect(checks.slice(3).every((c) => c.status === 'not_reached')).toBe(true);
  });
});

describe('token exchange rate limit per client and user', () => {
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer({ tokenUserRateLimit: 2 });
  });
  afterAll(() => idjag.dispose());

  /** A JWT naming `sub` with a bogus signature: counted by the sub it claims, then refused by the grant. */
  const claiming = (sub: string) => [{ alg: 'RS256', typ: 'JWT' }, { sub }, 'c2ln'].map((p) => (typeof p === 'string' ? p : Buffer.from(JSON.stringify(p)).toString('base64url'))).join('.');

  test('one user over the limit gets 429; the client\'s other users and its other grants are unaffected; audited as rate_limit', async () => {
    for (let i = 0; i < 2; i++) expect((await exchange(idjag.url, claiming('user-1'))).status).toBe(400);
    const refused = await exchange(idjag.url, claiming('user-1'));
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(refused.body).toEqual({ error: 'temporarily_unavailable', error_description: `rate limit exceeded for this user at client demo-agent; retry after ${retryAfter} s` });
    // another user of the same client, and the same client's other grants
    expect((await exchange(idjag.url, claiming('user-2'))).status).toBe(400);
    expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, ADMIN_CLI)).status).toBe(200);
    // the same sub at another client is another budget
    expect((await exchange(idjag.url, claiming('user-1'), {}, ADMIN_CLI)).status).not.toBe(429);

    const [row] = await idjag.database.db.selectFrom('audit_log').selectAll().where('reason', '=', 'rate_limit').execute();
    expect(row).toMatchObject({ decision: 'denied', error: 'temporarily_unavailable', client_id: 'demo-agent' });
    expect(row!.explanation).toMatch(/^client:demo-agent:user-1 is over its limit of 2 token exchanges per minute for this user/);
  });

  test('counts reach the database, and each node adopts what the others counted (the bound across nodes)', async () => {
    const { SharedWindow, syncWindows } = await import('../src/throttle/window.ts');
    const { db } = idjag.database;
    const prefix = `test-${Date.now()}`;
    const a = new SharedWindow({ prefix, limit: 5, duration: 60 });
    const b = new SharedWindow({ prefix, limit: 5, duration: 60 });
    for (let i = 0; i < 3; i++) expect(a.take('k').allowed).toBe(true);
    await sleep(25);
    for (let i = 0; i < 2; i++) expect(b.take('k').allowed).toBe(true);
    await syncWindows(db, [a]);
    await syncWindows(db, [b]);
    // b learned a's three at its sync; a learns b's two at its next one
    expect(b.peek('k').count).toBe(5);
    expect(b.take('k').allowed).toBe(false);
    expect(a.peek('k').count).toBe(3);
    a.add('k');
    await syncWindows(db, [a]);
    expect(a.peek('k').count).toBe(6);
    const row = await db.selectFrom('rate_limits').select(['points', 'expire']).where('key', '=', `${prefix}:k`).executeTakeFirstOrThrow();
    expect(Number(row.points)).toBe(6);
    // both nodes end the window when its first writer (a, 25 ms before b) said it ends
    const t = Date.now();
    expect(b.peek('k', t).msLeft).toBe(a.peek('k', t).msLeft);
    expect(Number(row.expire) - t).toBe(a.peek('k', t).msLeft);
  });

  test('a sync of more keys than one statement takes writes every key, and each learns its total', async () => {
    const { SharedWindow, syncWindows } = await import('../src/throttle/window.ts');
    const { db } = idjag.database;
    const prefix = `many-${Date.now()}`;
    const w = new SharedWindow({ prefix, limit: 10, duration: 60 });
    for (let k = 0; k < 250; k++) for (let i = 0; i <= k % 3; i++) w.take(`u${k}`);
    await syncWindows(db, [w]);
    const rows = await db.selectFrom('rate_limits').select(['key', 'points']).where('key', 'like', `${prefix}:%`).execute();
    expect(rows).toHaveLength(250);
    for (const r of rows) expect(Number(r.points)).toBe(Number(r.key.slice(prefix.length + 2)) % 3 + 1);
    w.take('u0');
    await syncWindows(db, [w]);
    expect(w.peek('u0').count).toBe(2);
  });

  (onPostgres ? test.skip : test)('on SQLite, a sync waits for another process\'s write lock without stopping the event loop', async () => {
    const { SharedWindow, syncWindows } = await import('../src/throttle/window.ts');
    const other = new SQLite(idjag.database.location);
    try {
      const prefix = `locked-${Date.now()}`;
      const w = new SharedWindow({ prefix, limit: 10, duration: 60 });
      w.take('k');
      other.prepare('begin immediate').run();
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 5);
      const synced = syncWindows(idjag.database.db, [w]);
      await sleep(100);
      expect(ticks).toBeGreaterThanOrEqual(8);
      other.prepare('commit').run();
      await synced;
      clearInterval(ticker);
      const row = await idjag.database.db.selectFrom('rate_limits').select('points').where('key', '=', `${prefix}:k`).executeTakeFirst();
      expect(Number(row?.points)).toBe(1);
    } finally {
      other.close();
    }
  });
});

describe('failed client authentication, on every endpoint that checks a client secret', () => {
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer({ tokenRateLimit: 3, clientAuthIpFailures: 3, clientAuthClientFailures: 0 });
  });
  afterAll(() => idjag.dispose());

  const post = (path: string, form: Record<string, string>, auth: { id: string; secret: string }) => fetch(`${idjag.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${auth.id}:${auth.secret}`).toString('base64')}` },
    body: new URLSearchParams(form),
  });

  test('counts per IP whatever the path spelling or endpoint, and refuses the IP before any secret is checked, the right one too', async () => {
    const wrong = { id: DEMO_AGENT.id, secret: 'wrong-secret' };
    // the token endpoint as the provider also serves it, and introspection: three failures from this address
    expect((await post('/TOKEN', { grant_type: 'client_credentials' }, wrong)).status).toBe(401);
    expect((await post('/token/', { grant_type: 'client_credentials' }, { id: 'no-such-client', secret: 'x'.repeat(12) })).status).toBe(401);
    expect((await post('/token/introspection', { token: 'x' }, wrong)).status).toBe(401);
    // the fourth attempt is refused before its secret is looked at: the right secret gets the same 429
    for (const [path, form] of [['/Token', { grant_type: 'client_credentials', scope: 'admin' }], ['/token/revocation', { token: 'x' }], ['/token', { grant_type: 'client_credentials', scope: 'admin' }]] as const) {
      const refused = await post(path, form, ADMIN_CLI);
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(await refused.json()).toEqual({ error: 'temporarily_unavailable', error_description: expect.stringMatching(/^too many failed client authentications from this address; retry after \d+ s$/) });
    }
    // so is the client diagnostics view, which checks client secrets too
    const view = await fetch(`${idjag.url}/conformance/clients/demo-agent?format=json`, { headers: { authorization: `Basic ${Buffer.from('demo-agent:demo-agent-secret').toString('base64')}` } });
    expect(view.status).toBe(429);
    // a token exchange refused this way is audited: the rate limit failed before client authentication ran
    const throttled = await exchange(idjag.url, 'not-a-token');
    expect(throttled.status).toBe(429);
    const [row] = await idjag.database.db.selectFrom('audit_log').selectAll().where('reason', '=', 'rate_limit').execute();
    expect(row).toMatchObject({ decision: 'denied', error: 'temporarily_unavailable', client_id: 'demo-agent' });
    expect(row!.explanation).toMatch(/^ip:\S+ is over its limit of 3 failed client authentications per minute/);
    const checks = decodeChecks(row!.checks);
    expect(checks.map((c) => [c.name, c.status]).slice(0, 2)).toEqual([['rate_limit', 'failed'], ['client_authentication', 'not_reached']]);
    // the refused requests never reached a grant: no client's token budget was spent (the failures were)
    await idjag.limits.sync();
    expect((await idjag.database.db.selectFrom('rate_limits').select(['key', 'points']).where('key', 'like', 'client_auth_ip:%').execute()).map((r) => Number(r.points))).toEqual([3]);
    const keys = await idjag.database.db.selectFrom('rate_limits').select('key').where('key', 'like', 'token:%').execute();
    expect(keys).toEqual([]);
  });

  test('expired counters are purged', async () => {
    const { db } = idjag.database;
    await db.insertInto('rate_limits').values([{ key: 'test:old', points: 1, expire: Date.now() - 1000 }, { key: 'test:live', points: 1, expire: Date.now() + 60_000 }]).execute();
    expect(await purgeExpiredRateLimits(db)).toBeGreaterThanOrEqual(1);
    const left = await db.selectFrom('rate_limits').select('key').where('key', 'like', 'test:%').execute();
    expect(left).toEqual([{ key: 'test:live' }]);
  });
});

describe('failed client authentication per client id', () => {
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer({ clientAuthIpFailures: 0, clientAuthClientFailures: 2 });
  });
  afterAll(() => idjag.dispose());

  test('failures naming a client id, from anywhere, hold that client id off; other clients are unaffected', async () => {
    const wrong = { id: DEMO_AGENT.id, secret: 'wrong-secret' };
    for (let i = 0; i < 2; i++) expect((await exchange(idjag.url, 'not-a-token', {}, wrong)).status).toBe(401);
    const refused = await exchange(idjag.url, 'not-a-token');
    expect(refused.status).toBe(429);
    expect(refused.body.error_description).toMatch(/^too many failed client authentications for client demo-agent; retry after \d+ s$/);
    expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials', scope: 'admin' }, ADMIN_CLI)).status).toBe(200);
    // an unknown client id is counted like a known one
    for (let i = 0; i < 2; i++) expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials' }, { id: 'ghost', secret: 'ghost-secret' })).status).toBe(401);
    expect((await tokenRequest(idjag.url, { grant_type: 'client_credentials' }, { id: 'ghost', secret: 'ghost-secret' })).status).toBe(429);
  });
});

test('the limits are configurable by flag and environment, with the documented defaults', () => {
  const base = { port: '0' };
  expect(loadConfig([], base)).toMatchObject({ loginAccountFailures: 5, loginAccountBlock: 30, loginAccountBlockMax: 900, loginIpFailures: 100, tokenRateLimit: 600_000, tokenUserRateLimit: 300, clientAuthIpFailures: 60, clientAuthClientFailures: 300 });
  expect(loadConfig(['--client-auth-ip-failures', '10'], { ...base, IDJAG_CLIENT_AUTH_CLIENT_FAILURES: '20' })).toMatchObject({ clientAuthIpFailures: 10, clientAuthClientFailures: 20 });
  const env = { ...base, IDJAG_LOGIN_ACCOUNT_FAILURES: '7', IDJAG_LOGIN_ACCOUNT_BLOCK: '10', IDJAG_LOGIN_ACCOUNT_BLOCK_MAX: '60', IDJAG_LOGIN_IP_FAILURES: '20', IDJAG_TOKEN_RATE_LIMIT: '50', IDJAG_TOKEN_USER_RATE_LIMIT: '5' };
  expect(loadConfig([], env)).toMatchObject({ loginAccountFailures: 7, loginAccountBlock: 10, loginAccountBlockMax: 60, loginIpFailures: 20, tokenRateLimit: 50, tokenUserRateLimit: 5 });
  expect(loadConfig(['--token-user-rate-limit', '0'], env)).toMatchObject({ tokenUserRateLimit: 0 });
  expect(loadConfig(['--token-rate-limit', '0', '--login-ip-failures', '0', '--login-account-failures', '3', '--login-account-block', '5', '--login-account-block-max', '40'], env))
    .toMatchObject({ loginAccountFailures: 3, loginAccountBlock: 5, loginAccountBlockMax: 40, loginIpFailures: 0, tokenRateLimit: 0 });
  expect(() => loadConfig([], { ...base, IDJAG_TOKEN_RATE_LIMIT: '-1' })).toThrow(/tokenRateLimit/);
  expect(() => loadConfig(['--login-account-block', '0'], base)).toThrow(/loginAccountBlock/);
});
