import { get, type IncomingMessage } from 'node:http';
import { uuidv7 } from '../src/audit/index.ts';
import { signIn } from './helpers/browser.ts';
import { clientToken, connectAdmin, type AdminClient } from './helpers/admin.ts';
import { exchange, TODO_ADMIN_MCP, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let api: AdminClient;
let aliceSub: string;
const started = Date.now();

beforeAll(async () => {
  idjag = await startTestServer();
  api = await connectAdmin(idjag.url);
  const alice = await signIn(idjag.url);
  const bob = await signIn(idjag.url, { username: 'bob', password: 'bob' });
  aliceSub = (await idjag.database.db.selectFrom('users').select('sub').where('username', '=', 'alice').executeTakeFirstOrThrow()).sub;
  expect((await exchange(idjag.url, alice.tokens.id_token)).status).toBe(200);
  expect((await exchange(idjag.url, bob.tokens.id_token)).status).toBe(400);
  expect((await exchange(idjag.url, alice.tokens.id_token, { resource: TODO_ADMIN_MCP })).status).toBe(400);
  // a hostile user agent, for the CSV export
  const res = await fetch(`${idjag.url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': '=HYPERLINK("http://evil.example","x")', authorization: `Basic ${Buffer.from('demo-agent:demo-agent-secret').toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', requested_token_type: 'urn:ietf:params:oauth:token-type:id-jag', subject_token_type: 'urn:ietf:params:oauth:token-type:id_token', subject_token: 'garbage', audience: TODO_AS }),
  });
  expect(res.status).toBe(400);
});
afterAll(() => idjag.dispose());

type Summary = { id: string; at: string; decision: string; reason: string; username: string | null; resources: string[] | null; rule_ids: string[] };
const items = async (query: string): Promise<Summary[]> => {
  const res = await api.get(`/audit${query}`);
  expect(res.status).toBe(200);
  return res.body.items;
};

test('the audit list is newest first and filters by decision, client, user, MCP server, reason and time', async () => {
  const all = await items('');
  expect(all.map((r) => r.reason)).toEqual(['id_token.format', 'no_rule', 'subject_not_allowed', 'issued']);
  expect(all.map((r) => r.at)).toEqual([...all.map((r) => r.at)].sort().reverse());

  expect((await items('?decision=issued')).map((r) => r.username)).toEqual(['alice']);
  expect((await items('?decision=denied')).map((r) => r.reason)).toEqual(['id_token.format', 'no_rule', 'subject_not_allowed']);
  expect((await items('?user=bob')).map((r) => r.reason)).toEqual(['subject_not_allowed']);
  expect((await items(`?user=${aliceSub}`)).map((r) => r.reason)).toEqual(['no_rule', 'issued']);
  expect((await items('?user=alice&decision=denied')).map((r) => r.reason)).toEqual(['no_rule']);
  expect((await items(`?resource=${encodeURIComponent(TODO_ADMIN_MCP)}`)).map((r) => r.reason)).toEqual(['no_rule']);
  expect((await items(`?resource=${encodeURIComponent(TODO_MCP)}`)).map((r) => r.reason)).toEqual(['subject_not_allowed', 'issued']);
  expect((await items('?reason=subject_not_allowed')).map((r) => r.username)).toEqual(['bob']);
  expect(await items('?client_id=partner-app')).toEqual([]);
  expect(await items('?client_id=demo-agent')).toHaveLength(4);
  expect(await items(`?from=${started}`)).toHaveLength(4);
  expect(await items(`?to=${started}`)).toHaveLength(0);
  expect(await items(`?from=${encodeURIComponent(new Date(started).toISOString())}&to=${Date.now() + 1000}`)).toHaveLength(4);

  // keyset pages: one row at a time, the same rows in the same order, no repeats
  const paged: string[] = [];
  let cursor: string | null = null;
  do {
    const res = await api.get(`/audit?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
    paged.push(...res.body.items.map((r: Summary) => r.id));
    cursor = res.body.next_cursor;
  } while (cursor);
  expect(paged).toEqual(all.map((r) => r.id));
});

test('bad audit queries are 400s naming the parameter', async () => {
  for (const [query, path] of [['?decision=maybe', 'decision'], ['?cursor=bm9wZQ', 'cursor'], ['?limit=501', 'limit'], ['?from=yesterday', 'from']] as const) {
    const res = await api.get(`/audit${query}`);
    expect(res.status).toBe(400);
    expect(res.body.issues[0].path).toEqual([path]);
  }
  const unknown = await api.get('/audit?client=demo-agent');
  expect(unknown.status).toBe(400);
  expect(unknown.body.issues[0].message).toMatch(/client/);
});

test('the detail view has every check, passed or failed, with its section, and the rule that matched', async () => {
  const [issued] = await items('?decision=issued');
  const entry = (await api.get(`/audit/${issued!.id}`)).body;
  expect(entry).toMatchObject({ decision: 'issued', username: 'alice', rule_ids: ['engineering-todo'], scopes_granted: 'todos.read todos.write', jti: expect.any(String) });
  expect(entry.rules).toEqual([{ id: 'engineering-todo', rule: expect.objectContaining({ id: 'engineering-todo', who: { groups: ['engineering'] }, rs_client_id: 'demo-agent-at-todo' }) }]);
  expect(entry.checks.length).toBeGreaterThan(15);
  expect(entry.checks.every((c: { status: string }) => c.status === 'passed')).toBe(true);
  expect(entry.checks.find((c: { name: string }) => c.name === 'id_token.audience')).toMatchObject({ section: expect.stringContaining('§4.3.3'), error: 'invalid_grant' });

  const [denied] = await items('?reason=subject_not_allowed');
  const bob = (await api.get(`/audit/${denied!.id}`)).body;
  const failed = bob.checks.filter((c: { status: string }) => c.status === 'failed');
  expect(failed).toEqual([expect.objectContaining({ name: 'policy', error: 'invalid_target', message: expect.stringMatching(/^this user may not use client demo-agent/), explanation: expect.stringContaining('engineering-todo') })]);
  expect(bob.checks.filter((c: { status: string }) => c.status === 'not_reached').map((c: { name: string }) => c.name)).toEqual(['scope', 'step_up', 'issue']);
  expect(bob.rules[0].id).toBe('engineering-todo');

  expect((await api.get('/audit/0190b7d8-0000-7000-8000-000000000000')).status).toBe(404);
  expect((await api.get('/audit/nope')).status).toBe(400);
});

test('CSV and JSON Lines exports of the filtered set; formula-looking cells are defused', async () => {
  const csv = await api.get('/audit/export?format=csv&decision=denied');
  expect(csv.status).toBe(200);
  expect(csv.headers.get('content-type')).toBe('text/csv; charset=utf-8');
  expect(csv.headers.get('content-disposition')).toMatch(/^attachment; filename="idjag-audit-.*\.csv"$/);
  const lines = csv.text.trimEnd().split('\r\n');
  expect(lines[0]).toBe('id,time,decision,reason,error,client_id,sub,username,audience,resources,scopes_requested,scopes_granted,rule_ids,failed_check,jti,subject_token_type,ip,user_agent,duration_ms,explanation');
  expect(lines).toHaveLength(4);
  expect(lines[1]).toContain(`"'=HYPERLINK(""http://evil.example"",""x"")"`);
  expect(lines[3]).toContain(',subject_not_allowed,invalid_target,demo-agent,');
  expect(lines[3]).toContain(',engineering-todo,policy,');

  const jsonl = await api.get('/audit/export?format=jsonl&user=alice');
  expect(jsonl.headers.get('content-type')).toBe('application/jsonl; charset=utf-8');
  const rows = jsonl.text.trimEnd().split('\n').map((l) => JSON.parse(l));
  expect(rows.map((r) => r.reason)).toEqual(['no_rule', 'issued']);
  expect(rows[1]).toMatchObject({ decision: 'issued', resources: [TODO_MCP], rule_ids: ['engineering-todo'], checks: expect.any(Array) });
  expect((await api.get('/audit/export?format=xml')).status).toBe(400);
});

test('the export streams page by page: the token endpoint keeps working while a download is stalled', async () => {
  const { db } = idjag.database;
  const base = Date.now() - 3_600_000;
  const ROWS = 20_000;
  // about 20 MB of JSON Lines: far more than the socket buffers hold, so a stalled reader really stalls the server
  const bulk = Array.from({ length: ROWS }, (_, i) => ({
    id: uuidv7(base + i), at: base + i, request_id: `bulk-${i}`, decision: 'denied' as const, reason: 'bulk', explanation: `row ${i} ${'x'.repeat(800)}`,
    error: 'invalid_target', client_id: 'bulk-client', sub: null, username: null, audience: null, resources: null, scopes_requested: null,
    scopes_granted: null, rule_id: null, jti: null, exp: null, subject_token_type: null, ip: null, user_agent: null, duration_ms: null, checks: '[]',
  }));
  for (let i = 0; i < bulk.length; i += 500) await db.insertInto('audit_log').values(bulk.slice(i, i + 500)).execute();

  const token = await clientToken(idjag.url);
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    get(`${idjag.url}/admin/api/audit/export?format=jsonl&reason=bulk`, { headers: { authorization: `Bearer ${token}` } }, resolve).on('error', reject);
  });
  expect(res.statusCode).toBe(200);
  const chunks: Buffer[] = [await new Promise<Buffer>((resolve) => res.once('data', (c: Buffer) => { res.pause(); resolve(c); }))];

  // the download is stalled: an exchange (which reads policy and writes an audit row) still completes
  const alice = await signIn(idjag.url);
  let timer: NodeJS.Timeout | undefined;
  const during = await Promise.race([
    exchange(idjag.url, alice.tokens.id_token),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('the token endpoint was blocked by the export')), 5000); }),
  ]).finally(() => clearTimeout(timer));
  expect(during.status).toBe(200);

  res.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise((resolve) => res.on('end', resolve));
  res.resume();
  await ended;
  const exported = Buffer.concat(chunks).toString().trimEnd().split('\n').map((l) => JSON.parse(l) as { request_id: string });
  expect(exported).toHaveLength(ROWS);
  expect(exported[0]!.request_id).toBe(`bulk-${ROWS - 1}`);
  expect(exported.at(-1)!.request_id).toBe('bulk-0');
});

test('keys: the published JWKS, which key signs what, and rotation that takes effect at once', async () => {
  const before = (await api.get('/keys')).body;
  expect(Object.keys(before.signing).sort()).toEqual(['id_jag', 'id_token']);
  const published = await (await fetch(`${idjag.url}/jwks`)).json() as { keys: { kid: string }[] };
  expect(before.jwks.keys.map((k: { kid: string }) => k.kid).sort()).toEqual(published.keys.map((k) => k.kid).sort());
  expect(JSON.stringify(before)).not.toMatch(/"(d|p|q|dp|dq|qi)":/);
  expect(before.keys.filter((k: { active: boolean }) => k.active).map((k: { kid: string }) => k.kid).sort()).toEqual(Object.values(before.signing).sort());

  const rotated = await api.post('/keys/rotate', { purposes: ['id_jag'] });
  expect(rotated.status).toBe(200);
  expect(rotated.body.retired).toEqual([before.signing.id_jag]);
  expect(rotated.body.keys.signing).toEqual({ id_token: before.signing.id_token, id_jag: rotated.body.created[0] });
  expect(rotated.body.keys.keys.find((k: { kid: string }) => k.kid === before.signing.id_jag)).toMatchObject({ active: false, retired_at: expect.any(String), unpublished_at: expect.any(String) });
  // this node's provider reloaded: the new key is published now, the old one still is
  const after = await (await fetch(`${idjag.url}/jwks`)).json() as { keys: { kid: string }[] };
  expect(after.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([rotated.body.created[0], before.signing.id_jag]));
  const change = (await api.get('/changes?entity=signing_keys')).body.items[0];
  expect(change).toMatchObject({ action: 'rotate_keys', actor: 'client:idjag-admin-cli', before: { active: [before.signing.id_jag] }, after: { active: rotated.body.created } });
  expect((await api.post('/keys/rotate', { purposes: ['hmac'] })).status).toBe(400);
});
