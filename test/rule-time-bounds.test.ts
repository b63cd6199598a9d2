/**
 * Time-bound rules over HTTP: `not_before` (inclusive) and `expires_at` (exclusive) through the admin API, the
 * token endpoint at both edges (real time: a rule that starts and one that ends a few seconds ahead), the audit
 * explanation, the simulator, effective access, the rules list, the export and the metrics' reason label.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { adminSignIn, text } from './helpers/admin-ui.ts';
import { lastAuditRow } from './helpers/audit.ts';
import { signIn } from './helpers/browser.ts';
import { exchange, TODO_ADMIN_MCP, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { scrape, total } from './helpers/metrics.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let api: AdminClient;
let bob: string;

const iso = (seconds: number) => new Date(seconds * 1000).toISOString();
const nowSeconds = () => Math.floor(Date.now() / 1000);
const salesRule = (over: Record<string, unknown>) => ({
  client_id: 'demo-agent', audience: TODO_AS, resource: TODO_MCP, who: { groups: ['sales'] }, scopes: ['todos.read'], default_scopes: ['todos.read'], ...over,
});

beforeAll(async () => {
  idjag = await startTestServer();
  api = await connectAdmin(idjag.url);
  bob = (await signIn(idjag.url, { username: 'bob', password: 'bob' })).tokens.id_token as string;
});
afterAll(() => idjag.dispose());

test('the bounds are ISO 8601 instants in the API; a window that closes before it opens, or a date without a time, is refused at its field', async () => {
  const bad = await api.post('/rules', salesRule({ id: 'bad-window', not_before: '2030-01-02T00:00:00Z', expires_at: '2030-01-01T00:00:00Z' }));
  expect(bad.status).toBe(400);
  expect(bad.body.issues).toEqual([{ path: ['expires_at'], message: 'expires_at must be later than not_before' }]);
  const same = await api.post('/rules', salesRule({ id: 'bad-window', not_before: '2030-01-01T00:00:00Z', expires_at: '2030-01-01T00:00:00Z' }));
  expect(same.body.issues[0].path).toEqual(['expires_at']);
  const date = await api.post('/rules', salesRule({ id: 'bad-window', expires_at: '2030-01-01' }));
  expect(date.status).toBe(400);
  expect(date.body.issues[0]).toMatchObject({ path: ['expires_at'], message: expect.stringContaining('ISO 8601 date-time with a zone') });
  expect((await api.get('/rules/bad-window')).status).toBe(404);

  // an offset is accepted and shown in UTC; the document round-trips it
  const ok = await api.post('/rules', salesRule({ id: 'future-sales', not_before: '2030-01-01T02:00:00+02:00', expires_at: '2030-02-01T00:00:00Z' }));
  expect(ok.status).toBe(201);
  expect(ok.body).toMatchObject({ not_before: '2030-01-01T00:00:00.000Z', expires_at: '2030-02-01T00:00:00.000Z', validity: 'not_yet_valid' });
  const exported = (await api.get('/export')).body.rules.find((r: { id: string }) => r.id === 'future-sales');
  expect(exported).toMatchObject({ not_before: '2030-01-01T00:00:00.000Z', expires_at: '2030-02-01T00:00:00.000Z' });
  expect(exported.validity).toBeUndefined();
  const again = await api.post('/import', { rules: [exported] });
  expect(again.body.changes).toEqual([]);
  // null clears a bound
  expect((await api.patch('/rules/future-sales', { not_before: null })).body).toMatchObject({ validity: 'in_force', expires_at: '2030-02-01T00:00:00.000Z' });
  expect((await api.patch('/rules/future-sales', { not_before: null })).body.not_before).toBeUndefined();
  expect((await api.delete('/rules/future-sales')).status).toBe(204);
});

test('at the edges, over HTTP: a rule starting in a few seconds refuses until then; one ending then grants until then', async () => {
  // at least two seconds ahead, so the requests before the edge are made before it even on a busy machine
  const edge = nowSeconds() + 3;
  expect((await api.post('/rules', salesRule({ id: 'sales-starts', not_before: iso(edge) }))).status).toBe(201);
  expect((await api.post('/rules', salesRule({ id: 'sales-admin-ends', resource: TODO_ADMIN_MCP, scopes: ['todos.admin'], default_scopes: ['todos.admin'], expires_at: iso(edge) }))).status).toBe(201);

  const before = await exchange(idjag.url, bob);
  expect(before.status).toBe(400);
  expect(before.body.error).toBe('invalid_target');
  expect(before.body.error_description).not.toContain('sales-starts');
  const refused = await lastAuditRow(idjag);
  expect(refused).toMatchObject({ decision: 'denied', reason: 'rule_not_yet_valid', rule_id: 'sales-starts' });
  expect(refused.explanation).toContain(`rule sales-starts is valid from ${iso(edge)}`);
  expect((await exchange(idjag.url, bob, { resource: TODO_ADMIN_MCP })).status).toBe(200);

  await sleep(Math.max(0, edge * 1000 - Date.now()) + 50);

  const after = await exchange(idjag.url, bob);
  expect(after.status).toBe(200);
  expect((await lastAuditRow(idjag)).rule_id).toBe('sales-starts');
  const ended = await exchange(idjag.url, bob, { resource: TODO_ADMIN_MCP });
  expect(ended.status).toBe(400);
  const expired = await lastAuditRow(idjag);
  expect(expired).toMatchObject({ decision: 'denied', reason: 'rule_expired', rule_id: 'sales-admin-ends' });
  expect(expired.explanation).toContain(`rule sales-admin-ends expired at ${iso(edge)}`);

  // the reason is a label of its own in the metrics, not "other"
  const metrics = await scrape(idjag.url);
  expect(total(metrics, 'idjag_token_exchanges_total', { reason: 'rule_expired' })).toBe(1);
  expect(total(metrics, 'idjag_token_exchanges_total', { reason: 'rule_not_yet_valid' })).toBe(1);
});

test('the simulator and effective access read the same bounds, at the time asked', async () => {
  const sim = await api.post('/simulate', { client_id: 'demo-agent', user: 'bob', audience: TODO_AS, resource: TODO_ADMIN_MCP });
  expect(sim.body).toMatchObject({ decision: 'denied', reason: 'rule_expired', rule_ids: ['sales-admin-ends'] });
  expect(sim.body.explanation).toContain('expired at');

  const expiry = (await api.get('/rules/sales-admin-ends')).body.expires_at as string;
  const now = await api.get(`/access?resource=${encodeURIComponent(TODO_ADMIN_MCP)}`);
  expect(now.body.items).toEqual([]);
  const then = await api.get(`/access?resource=${encodeURIComponent(TODO_ADMIN_MCP)}&at=${encodeURIComponent(new Date(Date.parse(expiry) - 1000).toISOString())}`);
  expect(then.body.items.map((r: { username: string }) => r.username)).toEqual(['bob']);
  expect(then.body.items[0]).toMatchObject({ rule_ids: ['sales-admin-ends'], expires_at: expiry, scopes: ['todos.admin'] });
  // the exclusive end: at the expiry itself, no access
  const atEnd = await api.get(`/access?resource=${encodeURIComponent(TODO_ADMIN_MCP)}&at=${encodeURIComponent(expiry)}`);
  expect(atEnd.body.items).toEqual([]);
});

test('expired rules show as such: the validity filter, the list page and the rule page', async () => {
  const ids = async (validity: string) => ((await api.get(`/rules?validity=${validity}`)).body.items as { id: string }[]).map((r) => r.id);
  expect(await ids('expired')).toEqual(['sales-admin-ends']);
  expect(await ids('in_force')).toEqual(expect.arrayContaining(['engineering-todo', 'sales-starts']));
  expect(await ids('in_force')).not.toContain('sales-admin-ends');
  expect((await api.get('/rules?validity=sometime')).body.issues[0].path).toEqual(['validity']);

  const ui = await adminSignIn(idjag.url);
  const list = await ui.open('/admin/rules?validity=expired');
  expect(list.status).toBe(200);
  const row = /<tr class="[^"]*expired[^"]*">([\s\S]*?)<\/tr>/.exec(list.html)?.[1] ?? '';
  expect(row).toContain('sales-admin-ends');
  expect(row).toContain('<span class="badge window expired"');
  const expiry = (await api.get('/rules/sales-admin-ends')).body.expires_at as string;
  const shown = expiry.replace('T', ' ').replace(/\.\d+Z$/, '');
  expect(text(row)).toContain(`since ${shown}`);
  const form = await ui.open('/admin/rules/sales-admin-ends/edit');
  expect(text(form.html.replace(/<[^>]+>/g, ''))).toContain(`This rule is expired (since ${shown} UTC): it grants nothing now.`);
  expect(form.html).toMatch(/name="expires_at" type="datetime-local" step="1" value="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"/);

  // the form reads its datetime-local fields as UTC
  const saved = await ui.submit('/admin/rules/sales-admin-ends/edit', {
    client_id: 'demo-agent', audience: TODO_AS, resource: TODO_ADMIN_MCP, who: 'groups', who_groups: 'sales', scopes: 'todos.admin', default_scopes: 'todos.admin',
    lifetime: '300', enabled: 'on', not_before: '2031-05-06T07:08', expires_at: '',
  });
  expect(saved.status).toBe(200);
  expect((await api.get('/rules/sales-admin-ends')).body).toMatchObject({ not_before: '2031-05-06T07:08:00.000Z', validity: 'not_yet_valid' });
  expect((await api.get('/rules/sales-admin-ends')).body.expires_at).toBeUndefined();
});
