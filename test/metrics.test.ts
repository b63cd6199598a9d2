import { sql } from 'kysely';
import { ConfigError, loadConfig } from '../src/config/index.ts';
import { authorize, DEMO_AGENT, REDIRECT_URI, signIn, tokenRequest } from './helpers/browser.ts';
import { onPostgres } from './helpers/database.ts';
import { exchange, TODO_ADMIN_MCP } from './helpers/exchange.ts';
import { parseMetrics, samples, scrape, total, type Sample } from './helpers/metrics.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

/**
 * /metrics (prom-client): the Prometheus text format, bounded labels, optional bearer protection, and the
 * counters agreeing with the audit logs (audit_log, login_events) after a mix of allowed, denied, malformed and
 * rate-limited requests.
 */

const EXCHANGES = 'idjag_token_exchanges_total';

describe('GET /metrics', () => {
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer();
  });
  afterAll(() => idjag.dispose());

  test('the Prometheus text format: idjag\'s families, zero series for closed label sets, process metrics', async () => {
    const res = await fetch(`${idjag.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = await res.text();
    for (const [name, type] of [
      [EXCHANGES, 'counter'], ['idjag_token_exchange_duration_seconds', 'histogram'], ['idjag_token_exchange_stage_duration_seconds', 'histogram'],
      ['idjag_rate_limit_refusals_total', 'counter'], ['idjag_sign_ins_total', 'counter'], ['idjag_audit_write_failures_total', 'counter'],
      ['process_cpu_user_seconds_total', 'counter'], ['process_resident_memory_bytes', 'gauge'], ['nodejs_heap_size_used_bytes', 'gauge'], ['nodejs_eventloop_lag_seconds', 'gauge'],
    ]) expect(body).toContain(`# TYPE ${name} ${type}`);
    const all = parseMetrics(body);
    expect(samples(all, 'idjag_audit_write_failures_total').map((s) => [s.labels.log, s.value])).toEqual([['token_exchange', 0], ['sign_in', 0]]);
    expect(samples(all, 'idjag_rate_limit_refusals_total').map((s) => s.labels.limiter).sort()).toEqual(['client_auth_client', 'client_auth_ip', 'login_account', 'login_ip', 'token_client', 'token_public', 'token_user']);
    expect(samples(all, 'idjag_token_exchange_stage_duration_seconds_count').map((s) => s.labels.stage)).toEqual(['request', 'subject', 'target', 'policy', 'mint', 'audit']);
    expect(total(all, 'idjag_sign_ins_total')).toBe(0);
  });

  test('scraping counts nothing, is never rate limited, and answers only GET and HEAD', async () => {
    const idjagSeries = (all: Sample[]) => all.filter((s) => s.name.startsWith('idjag_')).map((s) => `${s.name}${JSON.stringify(s.labels)} ${s.value}`);
    const first = idjagSeries(await scrape(idjag.url));
    for (let i = 0; i < 40; i++) expect((await fetch(`${idjag.url}/metrics`)).status).toBe(200);
    expect(idjagSeries(await scrape(idjag.url))).toEqual(first);
    expect((await fetch(`${idjag.url}/metrics`, { method: 'HEAD' })).status).toBe(200);
    const post = await fetch(`${idjag.url}/metrics`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });

  test('the PostgreSQL pool is measured on PostgreSQL only', async () => {
    const all = await scrape(idjag.url);
    if (onPostgres) {
      expect(samples(all, 'idjag_db_pool_max_connections').map((s) => s.value)).toEqual([10]);
      expect(samples(all, 'idjag_db_pool_connections').map((s) => s.labels.state)).toEqual(['active', 'idle']);
      expect(total(all, 'idjag_db_pool_connections')).toBeGreaterThanOrEqual(1);
      expect(samples(all, 'idjag_db_pool_waiting_queries')).toHaveLength(1);
    } else {
      expect(all.filter((s) => s.name.startsWith('idjag_db_pool'))).toEqual([]);
    }
  });
});

describe('bearer protection', () => {
  const TOKEN = 'metrics-scraper-token-0123456789';
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer({ metricsToken: TOKEN });
  });
  afterAll(() => idjag.dispose());

  test('without the token: 401 with a Bearer challenge; a wrong one: invalid_token; the right one: the metrics', async () => {
    const none = await fetch(`${idjag.url}/metrics`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer realm="idjag metrics"');
    expect(await none.text()).not.toContain('idjag_');
    for (const authorization of [`Bearer ${TOKEN}x`, `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`, `Bearer ${TOKEN.slice(0, -1)}`]) {
      const wrong = await fetch(`${idjag.url}/metrics`, { headers: { authorization } });
      expect(wrong.status).toBe(401);
      expect(wrong.headers.get('www-authenticate')).toBe('Bearer realm="idjag metrics", error="invalid_token"');
    }
    expect(total(await scrape(idjag.url, TOKEN), 'idjag_audit_write_failures_total')).toBe(0);
  });

  test('the token is configured by IDJAG_METRICS_TOKEN or --metrics-token, at least 16 printable characters', () => {
    expect(loadConfig([], { IDJAG_METRICS_TOKEN: TOKEN }).metricsToken).toBe(TOKEN);
    expect(loadConfig(['--metrics-token', TOKEN], {}).metricsToken).toBe(TOKEN);
    expect(loadConfig([], {}).metricsToken).toBeUndefined();
    expect(() => loadConfig([], { IDJAG_METRICS_TOKEN: 'short' })).toThrow(ConfigError);
    expect(() => loadConfig([], { IDJAG_METRICS_TOKEN: 'has a space in it, sixteen+' })).toThrow(/printable ASCII without spaces/);
  });
});

describe('the counters agree with the audit logs', () => {
  const LIMIT = 20;
  let idjag: TestServer;
  beforeAll(async () => {
    idjag = await startTestServer({ tokenRateLimit: LIMIT });
  });
  afterAll(() => idjag.dispose());

  test('after a mix of issued, denied, malformed, unauthenticated and rate-limited exchanges, and sign-ins of every outcome', async () => {
    const alice = await signIn(idjag.url, { username: 'alice', password: 'alice' });
    const bob = await signIn(idjag.url, { username: 'bob', password: 'bob' });
    await expect(authorize(idjag.url, { username: 'alice', password: 'wrong' })).rejects.toThrow('login refused (401)');
    await expect(authorize(idjag.url, { username: 'nobody', password: 'x' })).rejects.toThrow('login refused (401)');
    const aliceToken = alice.tokens.id_token as string;

    const statuses: number[] = [];
    const send = async (p: ReturnType<typeof exchange>) => statuses.push((await p).status);
    await send(exchange(idjag.url, aliceToken));
    await send(exchange(idjag.url, aliceToken, { audience: `${idjag.issuer}/demo/as`, resource: `${idjag.issuer}/demo/mcp`, scope: 'todos.read' }));
    await send(exchange(idjag.url, bob.tokens.id_token as string));
    await send(exchange(idjag.url, bob.tokens.id_token as string, { scope: 'todos.read' }));
    await send(exchange(idjag.url, `${aliceToken.slice(0, -4)}AAAA`));
    await send(exchange(idjag.url, aliceToken, { audience: undefined }));
    await send(exchange(idjag.url, aliceToken, { resource: TODO_ADMIN_MCP, scope: 'todos.admin' }));
    await send(exchange(idjag.url, aliceToken, { scope: ['todos.read', 'todos.write'] }));
    await send(exchange(idjag.url, aliceToken, {}, { id: DEMO_AGENT.id, secret: 'wrong-secret' }));
    await send(exchange(idjag.url, aliceToken, {}, { id: 'partner-app', secret: 'partner-app-secret' }));
    // client ids nobody registered: one series ("none") however many there are
    for (let i = 0; i < 3; i++) await send(exchange(idjag.url, aliceToken, {}, { id: `made-up-${i}-${Math.random()}`, secret: 'x' }));
    // demo-agent's budget runs out: the refusal is audited as rate_limit
    for (let i = 0; i < LIMIT + 2 && !statuses.includes(429); i++) await send(exchange(idjag.url, aliceToken));
    expect(statuses).toContain(200);
    expect(statuses).toContain(400);
    expect(statuses).toContain(401);
    expect(statuses.at(-1)).toBe(429);
    // another grant refused by the same limit: a refusal, not an exchange
    const code = await tokenRequest(idjag.url, { grant_type: 'authorization_code', code: 'bogus', redirect_uri: REDIRECT_URI, code_verifier: 'v'.repeat(43) }, DEMO_AGENT);
    expect(code.status).toBe(429);

    const all = await scrape(idjag.url);
    const { db } = idjag.database;
    const rows = await db.selectFrom('audit_log').select(['decision', 'reason', 'client_id']).execute();
    const registered = new Set((await db.selectFrom('clients').select('client_id').execute()).map((c) => c.client_id));

    // every series of the counter is exactly the audit log grouped by decision, reason and registered client
    const fromAudit = new Map<string, number>();
    for (const r of rows) {
      const key = `${r.decision} ${r.reason} ${r.client_id && registered.has(r.client_id) ? r.client_id : 'none'}`;
      fromAudit.set(key, (fromAudit.get(key) ?? 0) + 1);
    }
    const fromMetrics = new Map(samples(all, EXCHANGES).map((s) => [`${s.labels.decision} ${s.labels.reason} ${s.labels.client_id}`, s.value]));
    expect(Object.fromEntries(fromMetrics)).toEqual(Object.fromEntries(fromAudit));
    expect(rows.length).toBe(statuses.length);
    expect(fromMetrics.get('denied client_authentication none')).toBe(3);
    expect(fromMetrics.get('denied client_authentication demo-agent')).toBe(1);
    expect(fromMetrics.get('denied grant_type_allowed partner-app')).toBe(1);
    expect(fromMetrics.get('denied subject_not_allowed demo-agent')).toBe(2);
    expect(fromMetrics.get('denied rate_limit demo-agent')).toBe(1);
    expect(fromMetrics.get('denied request_syntax demo-agent')).toBe(1);
    expect(samples(all, EXCHANGES).every((s) => s.labels.reason !== 'other')).toBe(true);

    // the latency histogram counts every decision; the stages, every request the grant itself ran
    for (const decision of ['issued', 'denied', 'error']) {
      expect(total(all, 'idjag_token_exchange_duration_seconds_count', { decision })).toBe(rows.filter((r) => r.decision === decision).length);
    }
    const byGrant = rows.filter((r) => !['client_authentication', 'request_syntax', 'rate_limit'].includes(r.reason));
    const stage = (name: string) => total(all, 'idjag_token_exchange_stage_duration_seconds_count', { stage: name });
    expect(stage('request')).toBe(byGrant.length);
    expect(stage('audit')).toBe(byGrant.length);
    expect(stage('subject')).toBe(byGrant.filter((r) => !['grant_type_allowed', 'audience_present'].includes(r.reason)).length);
    expect(stage('mint')).toBe(rows.filter((r) => r.decision === 'issued').length);
    expect(total(all, 'idjag_token_exchange_stage_duration_seconds_sum', { stage: 'subject' })).toBeGreaterThan(0);

    // sign-ins: login_events grouped by outcome and reason
    const logins = await db.selectFrom('login_events').select(['event', 'reason']).execute();
    const loginsFromLog = new Map<string, number>();
    for (const l of logins) loginsFromLog.set(`${l.event} ${l.reason ?? 'none'}`, (loginsFromLog.get(`${l.event} ${l.reason ?? 'none'}`) ?? 0) + 1);
    const loginsFromMetrics = new Map(samples(all, 'idjag_sign_ins_total').filter((s) => s.value > 0).map((s) => [`${s.labels.outcome} ${s.labels.reason}`, s.value]));
    expect(Object.fromEntries(loginsFromMetrics)).toEqual(Object.fromEntries(loginsFromLog));
    expect(Object.fromEntries(loginsFromMetrics)).toEqual({ 'succeeded none': 2, 'failed wrong_password': 1, 'failed unknown_user': 1 });

    // refusals: the exchange and the client_credentials request over demo-agent's limit
    expect(total(all, 'idjag_rate_limit_refusals_total', { limiter: 'token_client' })).toBe(2);
    expect(total(all, 'idjag_audit_write_failures_total')).toBe(0);
  });

  test('an audit row that cannot be written is counted as a failure, not as a decision or a sign-in', async () => {
    const { db } = idjag.database;
    const before = await scrape(idjag.url);
    // demo-agent is over its limit for this minute: the partner client's exchange, which the grant refuses
    await sql`alter table audit_log rename to audit_log_away`.execute(db);
    try {
      const res = await exchange(idjag.url, 'not-a-token', {}, { id: 'partner-app', secret: 'partner-app-secret' });
      expect([res.status, res.body.error]).toEqual([503, 'temporarily_unavailable']);
    } finally {
      await sql`alter table audit_log_away rename to audit_log`.execute(db);
    }
    const after = await scrape(idjag.url);
    expect(total(after, 'idjag_audit_write_failures_total', { log: 'token_exchange' })).toBe(1);
    expect(total(after, EXCHANGES)).toBe(total(before, EXCHANGES));

    // a sign-in whose login_events row cannot be written fails, and is counted as such
    await sql`alter table login_events rename to login_events_away`.execute(db);
    try {
      await expect(authorize(idjag.url, { username: 'bob', password: 'bob' })).rejects.toThrow();
    } finally {
      await sql`alter table login_events_away rename to login_events`.execute(db);
    }
    const last = await scrape(idjag.url);
    expect(total(last, 'idjag_audit_write_failures_total', { log: 'sign_in' })).toBe(1);
    expect(total(last, 'idjag_sign_ins_total')).toBe(total(after, 'idjag_sign_ins_total'));
  });
});
