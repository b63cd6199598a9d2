/**
 * What the current texts add to the token exchange, over real HTTP: RFC 9396 authorization_details (granted,
 * narrowed, refused, malformed), RFC 8693 actor_token (kept by type and hash), and what each Resource AS
 * learns about the user (released claims, aud_sub, sub_id, tenant, aud_tenant), each in the response, the
 * ID-JAG, the audit row, the simulator and the client's own diagnostics.
 */
import { createHash } from 'node:crypto';
import { decodeJwt } from 'jose';
import { decodeChecks, decodeTokenType } from '../src/audit/codec.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { lastAuditRow } from './helpers/audit.ts';
import { basic, signIn, type TokenResponse } from './helpers/browser.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const TENANT = 'acme-corp';

let idjag: TestServer;
let api: AdminClient;
let alice: string;
let todoAs: { id: string };

beforeAll(async () => {
  idjag = await startTestServer({ tenant: TENANT });
  api = await connectAdmin(idjag.url);
  alice = (await signIn(idjag.url)).tokens.id_token as string;
  todoAs = (await api.get('/resource-servers')).body.items.find((r: { issuer: string }) => r.issuer === TODO_AS);
});
afterAll(() => idjag.dispose());

const idJagOf = (res: TokenResponse) => decodeJwt(res.body.access_token as string);
const failedCheck = (row: { checks: string }) => decodeChecks(row.checks).find((c) => c.status === 'failed');
/** The client's own diagnostics: its latest attempt. */
async function latestAttempt() {
  const res = await fetch(`${idjag.url}/conformance/clients/demo-agent?format=json&limit=1`, { headers: { authorization: basic('demo-agent', 'demo-agent-secret') } });
  return ((await res.json()) as { attempts: Record<string, any>[] }).attempts[0]!;
}

describe('authorization_details (RFC 9396; the seeded rule engineering-todo allows the type todo_list)', () => {
  const TODO_LIST = { type: 'todo_list', actions: ['read', 'write'], locations: [TODO_MCP], list: { name: 'groceries' } };
  const PAYMENT = { type: 'payment_initiation', instructedAmount: { currency: 'EUR', amount: '123.50' } };

  test('granted: the objects, whole, in the response (RFC 9396 §7) and the ID-JAG; the types in the audit row and the diagnostics', async () => {
    const res = await exchange(idjag.url, alice, { authorization_details: JSON.stringify([TODO_LIST]) });
    expect(res.status).toBe(200);
    expect(res.body.authorization_details).toEqual([TODO_LIST]);
    expect(idJagOf(res).authorization_details).toEqual([TODO_LIST]);
    const row = await lastAuditRow(idjag);
    expect(row).toMatchObject({ decision: 'issued', details_requested: '["todo_list"]', details_granted: '["todo_list"]' });
    expect(decodeChecks(row.checks).filter((c) => c.name.startsWith('authorization_details')).map((c) => [c.name, c.status, c.message]))
      .toEqual([['authorization_details.format', 'passed', 'types todo_list'], ['authorization_details.types', 'passed', 'granted todo_list']]);
    expect(await latestAttempt()).toMatchObject({ authorization_details_requested: ['todo_list'], authorization_details_granted: ['todo_list'] });
  });

  test('narrowed: a type the rule does not allow is dropped, the rest granted; the response says what was granted', async () => {
    const res = await exchange(idjag.url, alice, { authorization_details: JSON.stringify([PAYMENT, TODO_LIST]) });
    expect(res.status).toBe(200);
    expect(res.body.authorization_details).toEqual([TODO_LIST]);
    expect(idJagOf(res).authorization_details).toEqual([TODO_LIST]);
    const row = await lastAuditRow(idjag);
    expect(row).toMatchObject({ details_requested: '["payment_initiation","todo_list"]', details_granted: '["todo_list"]' });
    expect(decodeChecks(row.checks).find((c) => c.name === 'authorization_details.types')?.message).toBe('granted todo_list; not granted: payment_initiation');
  });

  test('an unknown type only: 400 invalid_authorization_details, nothing issued, the rule named to the admin only', async () => {
    const res = await exchange(idjag.url, alice, { authorization_details: JSON.stringify([PAYMENT]) });
    expect({ status: res.status, error: res.body.error }).toEqual({ status: 400, error: 'invalid_authorization_details' });
    expect(res.body.error_description).toMatch(/^none of the requested authorization_details types \(payment_initiation\) may be granted for this target \(failed check: authorization_details\.types; RFC 9396 §5/);
    expect(res.body).not.toHaveProperty('access_token');
    expect(res.body.error_description).not.toContain('engineering');
    const row = await lastAuditRow(idjag);
    expect(row).toMatchObject({ decision: 'denied', reason: 'authorization_details.types', error: 'invalid_authorization_details', jti: null, details_requested: '["payment_initiation"]', details_granted: null });
    expect(row.explanation).toBe('rule engineering-todo allows the types todo_list; requested: payment_initiation');
    expect(await latestAttempt()).toMatchObject({ decision: 'denied', failed_check: 'authorization_details.types', authorization_details_requested: ['payment_initiation'], authorization_details_granted: null });
  });

  test.each([
    ['not JSON', '[{type: todo_list}]', /^authorization_details is not valid JSON/],
    ['a JSON object, not an array', JSON.stringify(TODO_LIST), /^authorization_details must be a JSON array of objects/],
    ['an object without type', JSON.stringify([{ actions: ['read'] }]), /^authorization_details\[0\]\.type: type is required/],
    ['an element that is not an object', JSON.stringify([TODO_LIST, 'todo_list']), /^authorization_details\[1\] is not an object/],
    ['an empty array', '[]', /an empty array asks for nothing/],
  ])('malformed (%s): 400 invalid_authorization_details at the format check, before the subject token is looked at', async (_name, value, says) => {
    const res = await exchange(idjag.url, alice, { authorization_details: value });
    expect({ status: res.status, error: res.body.error }).toEqual({ status: 400, error: 'invalid_authorization_details' });
    expect(res.body.error_description).toMatch(says);
    const row = await lastAuditRow(idjag);
    expect(row).toMatchObject({ decision: 'denied', reason: 'authorization_details.format', error: 'invalid_authorization_details', sub: null, details_requested: null });
    // the request's own checks, then this one: the subject token's were never planned
    expect(decodeChecks(row.checks).map((c) => c.name).at(-1)).toBe('authorization_details.format');
    expect(decodeChecks(row.checks).some((c) => c.name.startsWith('id_token.'))).toBe(false);
    expect(failedCheck(row)?.name).toBe('authorization_details.format');
  });

  test('sent twice: refused by the provider as a repeated parameter (invalid_request), and audited', async () => {
    const res = await exchange(idjag.url, alice, { authorization_details: [JSON.stringify([TODO_LIST]), JSON.stringify([TODO_LIST])] });
    expect({ status: res.status, error: res.body.error }).toEqual({ status: 400, error: 'invalid_request' });
    expect(failedCheck(await lastAuditRow(idjag))?.name).toBe('request_syntax');
  });

  test('a rule\'s types are an admin field (API), validated', async () => {
    const bad = await api.patch('/rules/engineering-todo', { authorization_details_types: ['has space', 'todo_list', 'todo_list'] });
    expect(bad.status).toBe(400);
    expect(bad.body.issues.map((i: { path: unknown[] }) => i.path)).toEqual(expect.arrayContaining([['authorization_details_types', 0], ['authorization_details_types']]));
    const widened = await api.patch('/rules/engineering-todo', { authorization_details_types: ['todo_list', 'payment_initiation'] });
    expect(widened.body.authorization_details_types).toEqual(['todo_list', 'payment_initiation']);
    try {
      const res = await exchange(idjag.url, alice, { authorization_details: JSON.stringify([PAYMENT, TODO_LIST]) });
      expect(res.body.authorization_details).toEqual([PAYMENT, TODO_LIST]);
    } finally {
      expect((await api.patch('/rules/engineering-todo', { authorization_details_types: ['todo_list'] })).status).toBe(200);
    }
  });
});

describe('actor_token (RFC 8693 §2.1: OPTIONAL; the draft defines no processing)', () => {
  const ACTOR = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZ2VudC03In0.the-actor-token';
  const hash = createHash('sha256').update(ACTOR).digest('base64url');

  test('with its type: accepted; the audit row keeps the type and the SHA-256, never the token', async () => {
    const res = await exchange(idjag.url, alice, { actor_token: ACTOR, actor_token_type: JWT_TYPE });
    expect(res.status).toBe(200);
    expect(JSON.stringify(idJagOf(res))).not.toContain('agent-7');
    const row = await lastAuditRow(idjag);
    expect(row).toMatchObject({ decision: 'issued', actor_token_type: '@jwt', actor_token_hash: hash });
    expect(decodeTokenType(row.actor_token_type)).toBe(JWT_TYPE);
    expect(JSON.stringify(row)).not.toContain('the-actor-token');
    expect(decodeChecks(row.checks).find((c) => c.name === 'actor_token')).toMatchObject({ status: 'passed', message: `type ${JWT_TYPE}; recorded by its hash, not processed further` });
    const attempt = await latestAttempt();
    expect(attempt).toMatchObject({ actor_token_type: JWT_TYPE, actor_token_hash: hash });
    expect(JSON.stringify(attempt)).not.toContain('the-actor-token');
    const entry = (await api.get(`/audit/${row.id}`)).body;
    expect(entry).toMatchObject({ actor_token_type: JWT_TYPE, actor_token_hash: hash });
  });

  test.each([
    ['without actor_token_type', { actor_token: ACTOR }, /^actor_token_type is required when actor_token is sent/],
    ['actor_token_type without actor_token', { actor_token_type: JWT_TYPE }, /^actor_token_type was sent without actor_token/],
  ])('%s: 400 invalid_request at the actor_token check', async (_name, params, says) => {
    const res = await exchange(idjag.url, alice, params);
    expect({ status: res.status, error: res.body.error }).toEqual({ status: 400, error: 'invalid_request' });
    expect(res.body.error_description).toMatch(says);
    const row = await lastAuditRow(idjag);
    expect(failedCheck(row)?.name).toBe('actor_token');
    expect(JSON.stringify(row)).not.toContain('the-actor-token');
  });
});

describe('what each Resource AS learns about the user', () => {
  test('the seed releases email to the Todo AS, and nothing else besides the tenant this IdP is configured with', async () => {
    const claims = idJagOf(await exchange(idjag.url, alice));
    expect(claims).toMatchObject({ email: 'alice@example.com', tenant: TENANT });
    for (const claim of ['name', 'groups', 'preferred_username', 'email_verified', 'aud_sub', 'sub_id', 'aud_tenant']) expect(claims).not.toHaveProperty(claim);
  });

  test('released claims per Resource AS: name, groups and preferred_username instead of email', async () => {
    const patched = await api.patch(`/resource-servers/${todoAs.id}`, { released_claims: ['name', 'groups', 'preferred_username'] });
    expect(patched.body.released_claims).toEqual(['name', 'groups', 'preferred_username']);
    try {
      const claims = idJagOf(await exchange(idjag.url, alice, { scope: 'todos.read' }));
      expect(claims).toMatchObject({ name: 'Alice Anderson', groups: ['engineering'], preferred_username: 'alice' });
      expect(claims).not.toHaveProperty('email');
      // neither email nor aud_sub: issued, with a warning in the client's diagnostics
      expect((await latestAttempt()).warnings.map((w: { code: string }) => w.code)).toEqual(['no_email_or_aud_sub']);
    } finally {
      await api.patch(`/resource-servers/${todoAs.id}`, { released_claims: ['email'] });
    }
    const unknown = await api.patch(`/resource-servers/${todoAs.id}`, { released_claims: ['password_hash'] });
    expect(unknown.status).toBe(400);
    expect(unknown.body.issues[0]).toMatchObject({ path: ['released_claims', 0], message: expect.stringContaining('email, email_verified, name') });
  });

  test('a new Resource AS releases nothing: its ID-JAGs carry sub only, and the simulator shows the very same claims', async () => {
    const created = await api.post('/resource-servers', {
      issuer: 'https://auth.notes.example', name: 'Notes AS', mcp_servers: [{ resource: 'https://mcp.notes.example/mcp', name: 'Notes', scopes: ['notes.read'] }],
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ released_claims: [], aud_subs: {} });
    expect(created.body).not.toHaveProperty('sub_id_format');
    await api.post('/rules', { id: 'notes', client_id: 'demo-agent', audience: 'https://auth.notes.example', resource: 'https://mcp.notes.example/mcp', who: 'everyone', scopes: ['notes.read'] });
    try {
      const res = await exchange(idjag.url, alice, { audience: 'https://auth.notes.example', resource: 'https://mcp.notes.example/mcp', scope: 'notes.read' });
      expect(res.status).toBe(200);
      const claims = idJagOf(res);
      for (const claim of ['email', 'name', 'groups', 'aud_sub']) expect(claims).not.toHaveProperty(claim);

      const sim = await api.post('/simulate', { client_id: 'demo-agent', user: 'alice', audience: 'https://auth.notes.example', resource: 'https://mcp.notes.example/mcp', scope: 'notes.read' });
      expect(sim.body.warnings.map((w: { code: string }) => w.code)).toEqual(['no_email_or_aud_sub']);
      // the simulator assumes a login (auth_time) and knows no amr; signing adds jti, iat and exp
      const { jti: _j, iat: _i, exp: _e, auth_time: _a, amr: _m, ...signed } = claims;
      const { auth_time: _sa, ...simulated } = sim.body.id_jag.claims;
      expect(simulated).toEqual(signed);
    } finally {
      await api.delete('/rules/notes');
      await api.delete(`/resource-servers/${created.body.id}`);
    }
  });

  test('aud_sub per user and Resource AS: in the ID-JAG, in the change log, and removable', async () => {
    const set = await api.put(`/resource-servers/${todoAs.id}/aud-subs/alice`, { aud_sub: 'todo-user-0001' });
    expect(set.status).toBe(200);
    expect(set.body.aud_subs).toEqual({ alice: 'todo-user-0001' });
    expect(idJagOf(await exchange(idjag.url, alice))).toMatchObject({ aud_sub: 'todo-user-0001', email: 'alice@example.com' });

    // one account at the Resource AS is one user here
    const taken = await api.put(`/resource-servers/${todoAs.id}/aud-subs/bob`, { aud_sub: 'todo-user-0001' });
    expect(taken.status).toBe(400);
    expect(taken.body.issues).toEqual([{ path: ['aud_subs', 'bob'], message: 'todo-user-0001 is already alice\'s aud_sub at this Resource AS' }]);
    const nobody = await api.put(`/resource-servers/${todoAs.id}/aud-subs/nobody`, { aud_sub: 'x' });
    expect(nobody.body.issues).toEqual([{ path: ['aud_subs', 'nobody'], message: 'unknown user nobody' }]);
    expect((await api.put(`/resource-servers/${todoAs.id}/aud-subs/alice`, { aud_sub: 'has space' })).status).toBe(400);

    const change = (await api.get(`/changes?entity=resource_server&entity_id=${encodeURIComponent(TODO_AS)}&limit=1`)).body.items[0];
    expect(change).toMatchObject({ action: 'update', before: { aud_subs: {} }, after: { aud_subs: { alice: 'todo-user-0001' } } });

    // with aud_sub and without email, no warning: the Resource AS can find its account
    await api.patch(`/resource-servers/${todoAs.id}`, { released_claims: [] });
    try {
      const claims = idJagOf(await exchange(idjag.url, alice, { scope: 'todos.read' }));
      expect(claims).toMatchObject({ aud_sub: 'todo-user-0001' });
      expect(claims).not.toHaveProperty('email');
      expect((await latestAttempt()).warnings).toEqual([]);
    } finally {
      await api.patch(`/resource-servers/${todoAs.id}`, { released_claims: ['email'] });
    }

    const removed = await api.delete(`/resource-servers/${todoAs.id}/aud-subs/alice`);
    expect(removed.body.aud_subs).toEqual({});
    expect(idJagOf(await exchange(idjag.url, alice))).not.toHaveProperty('aud_sub');
    expect((await api.delete(`/resource-servers/${todoAs.id}/aud-subs/alice`)).status).toBe(404);
  });

  test('sub_id and aud_tenant per Resource AS', async () => {
    await api.patch(`/resource-servers/${todoAs.id}`, { sub_id_format: 'iss_sub', aud_tenant: 'todo-eu' });
    try {
      const claims = idJagOf(await exchange(idjag.url, alice));
      expect(claims).toMatchObject({ sub_id: { format: 'iss_sub', iss: idjag.issuer, sub: claims.sub }, aud_tenant: 'todo-eu', tenant: TENANT });
      await api.patch(`/resource-servers/${todoAs.id}`, { sub_id_format: 'email' });
      expect(idJagOf(await exchange(idjag.url, alice)).sub_id).toEqual({ format: 'email', email: 'alice@example.com' });
      expect((await api.patch(`/resource-servers/${todoAs.id}`, { sub_id_format: 'phone_number' })).status).toBe(400);
    } finally {
      await api.patch(`/resource-servers/${todoAs.id}`, { sub_id_format: null, aud_tenant: null });
    }
    const claims = idJagOf(await exchange(idjag.url, alice));
    expect(claims).not.toHaveProperty('sub_id');
    expect(claims).not.toHaveProperty('aud_tenant');
  });

  test('deleting a user removes their aud_subs, recorded as a change of each Resource AS', async () => {
    expect((await api.post('/users', { username: 'carol', email: 'carol@example.com' })).status).toBe(201);
    await api.put(`/resource-servers/${todoAs.id}/aud-subs/carol`, { aud_sub: 'todo-carol' });
    expect((await api.delete('/users/carol')).status).toBe(204);
    expect((await api.get(`/resource-servers/${todoAs.id}`)).body.aud_subs).toEqual({});
    const change = (await api.get(`/changes?entity=resource_server&entity_id=${encodeURIComponent(TODO_AS)}&limit=1`)).body.items[0];
    expect(change).toMatchObject({ action: 'update', before: { aud_subs: { carol: 'todo-carol' } }, after: { aud_subs: {} } });
  });

  test('export and import carry the release, aud_sub included (an export re-imported changes nothing)', async () => {
    await api.put(`/resource-servers/${todoAs.id}/aud-subs/alice`, { aud_sub: 'todo-user-0001' });
    try {
      const doc = (await api.get('/export')).body;
      expect(doc.resource_servers.find((r: { issuer: string }) => r.issuer === TODO_AS)).toMatchObject({ released_claims: ['email'], aud_subs: { alice: 'todo-user-0001' } });
      expect(doc.rules.find((r: { id: string }) => r.id === 'engineering-todo')).toMatchObject({ authorization_details_types: ['todo_list'] });
      expect((await api.post('/import', doc)).body).toMatchObject({ applied: true, changes: [] });
    } finally {
      await api.delete(`/resource-servers/${todoAs.id}/aud-subs/alice`);
    }
  });
});
