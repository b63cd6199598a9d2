/**
 * The simulator and the token endpoint are two adapters of one pipeline: for the same client, user, target,
 * scopes and authorization_details they must reach the same decision, error, reason, failing check, check
 * statuses, granted scopes and granted authorization_details types, and an issued ID-JAG must carry the claims
 * the simulator shows. Every policy denial reason, every target failure, the authorization_details outcomes
 * and the allowed cases go through both.
 * DPoP: a proof presented (the simulator assumes one by the same key) and a client that requires one sending none.
 */
import { decodeJwt } from 'jose';
import { decodeChecks, decodeTypes } from '../src/audit/codec.ts';
import { connectAdmin, type AdminClient } from './helpers/admin.ts';
import { dpopKey, makeProof, type DpopKey } from './helpers/dpop.ts';
import { lastAuditRow } from './helpers/audit.ts';
import { DEMO_AGENT, signIn } from './helpers/browser.ts';
import { exchange, TODO_ADMIN_MCP, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let api: AdminClient;
let key: DpopKey;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  idjag = await startTestServer();
  key = await dpopKey();
  api = await connectAdmin(idjag.url);
  for (const username of ['alice', 'bob']) {
    tokens[username] = (await signIn(idjag.url, { username, password: username })).tokens.id_token as string;
  }
});
afterAll(() => idjag.dispose());

interface Case {
  name: string;
  user?: 'alice' | 'bob';
  client?: 'demo-agent' | 'partner-app' | 'demo-public';
  audience?: string;
  resource?: string | string[];
  scope?: string;
  /** the authorization_details parameter, as sent */
  details?: string;
  /** the request carries a DPoP proof (the simulator: one by the same key is assumed) */
  dpop?: boolean;
  /** changes the policy or catalog for this case; returns how to undo it */
  setup?: (api: AdminClient) => Promise<() => Promise<unknown>>;
  expected: { decision: 'issued' | 'denied'; reason: string; check?: string };
}

const patchRule = (id: string, patch: Record<string, unknown>, undo: Record<string, unknown>) => async (a: AdminClient) => {
  expect((await a.patch(`/rules/${id}`, patch)).status).toBe(200);
  return () => a.patch(`/rules/${id}`, undo);
};

const cases: Case[] = [
  { name: 'allowed, with scope', scope: 'todos.read', expected: { decision: 'issued', reason: 'issued' } },
  { name: 'allowed, the rule\'s default scopes', expected: { decision: 'issued', reason: 'issued' } },
  { name: 'allowed, a scope outside the rule is dropped', scope: 'todos.read todos.delete', expected: { decision: 'issued', reason: 'issued' } },
  { name: 'allowed through an audience alias', audience: 'urn:example:todo', expected: { decision: 'issued', reason: 'issued' } },
  { name: 'unknown audience', audience: 'https://nowhere.example', expected: { decision: 'denied', reason: 'audience', check: 'audience' } },
  { name: 'unknown resource', resource: 'https://other.example/mcp', expected: { decision: 'denied', reason: 'resource', check: 'resource' } },
  { name: 'a resource that is not a URI', resource: 'not a uri', expected: { decision: 'denied', reason: 'resource', check: 'resource' } },
  {
    name: 'a resource another audience serves', resource: '${ISSUER}/demo/mcp',
    expected: { decision: 'denied', reason: 'resource', check: 'resource' },
  },
  {
    name: 'a disabled Resource AS',
    setup: async (a) => {
      const rs = (await a.get('/resource-servers')).body.items.find((r: { issuer: string }) => r.issuer === TODO_AS);
      expect((await a.patch(`/resource-servers/${rs.id}`, { enabled: false })).status).toBe(200);
      return () => a.patch(`/resource-servers/${rs.id}`, { enabled: true });
    },
    expected: { decision: 'denied', reason: 'audience_disabled', check: 'audience' },
  },
  {
    name: 'a disabled MCP server',
    setup: async (a) => {
      const rs = (await a.get('/resource-servers')).body.items.find((r: { issuer: string }) => r.issuer === TODO_AS);
      const mcp = rs.mcp_servers.find((m: { resource: string }) => m.resource === TODO_MCP);
      expect((await a.patch(`/mcp-servers/${mcp.id}`, { enabled: false })).status).toBe(200);
      return () => a.patch(`/mcp-servers/${mcp.id}`, { enabled: true });
    },
    expected: { decision: 'denied', reason: 'resource_disabled', check: 'resource' },
  },
  { name: 'no rule for the MCP server', resource: TODO_ADMIN_MCP, expected: { decision: 'denied', reason: 'no_rule', check: 'policy' } },
  {
    name: 'the only rule is disabled', setup: patchRule('engineering-todo', { enabled: false }, { enabled: true }),
    expected: { decision: 'denied', reason: 'rule_disabled', check: 'policy' },
  },
  { name: 'the user is in none of the rule\'s groups', user: 'bob', expected: { decision: 'denied', reason: 'subject_not_allowed', check: 'policy' } },
  { name: 'no requested scope may be granted', scope: 'todos.delete', expected: { decision: 'denied', reason: 'scope_not_allowed', check: 'scope' } },
  {
    name: 'no scope requested and no default scopes', setup: patchRule('engineering-todo', { default_scopes: [] }, { default_scopes: ['todos.read', 'todos.write'] }),
    expected: { decision: 'denied', reason: 'no_scope_requested', check: 'scope' },
  },
  {
    name: 'two resources whose rules name different Resource-AS client ids', resource: [TODO_MCP, TODO_ADMIN_MCP], scope: 'todos.read todos.admin',
    setup: async (a) => {
      const res = await a.post('/rules', {
        id: 'parity-admin', client_id: 'demo-agent', audience: TODO_AS, resource: TODO_ADMIN_MCP, who: { groups: ['engineering'] },
        scopes: ['todos.admin'], rs_client_id: 'someone-else',
      });
      expect(res.status).toBe(201);
      return () => a.delete('/rules/parity-admin');
    },
    expected: { decision: 'denied', reason: 'rules_disagree', check: 'policy' },
  },
  {
    name: 'the rule wants a fresher login', setup: async (a) => {
      const undo = await patchRule('engineering-todo', { max_auth_age: 1 }, { max_auth_age: null })(a);
      await new Promise((resolve) => setTimeout(resolve, 2100));
      return undo;
    },
    expected: { decision: 'denied', reason: 'step_up_required', check: 'step_up' },
  },
  {
    name: 'the user is disabled',
    setup: async (a) => {
      expect((await a.post('/users/alice/disable')).status).toBe(200);
      return () => a.post('/users/alice/enable');
    },
    expected: { decision: 'denied', reason: 'user_disabled', check: 'user' },
  },
  { name: 'a client not registered for the grant', client: 'partner-app', expected: { decision: 'denied', reason: 'grant_type_allowed', check: 'grant_type_allowed' } },
  { name: 'a public client', client: 'demo-public', expected: { decision: 'denied', reason: 'confidential_client', check: 'confidential_client' } },
  // authorization_details (RFC 9396): the seeded rule engineering-todo allows the type todo_list
  {
    name: 'authorization_details granted', details: JSON.stringify([{ type: 'todo_list', actions: ['read'] }]),
    expected: { decision: 'issued', reason: 'issued' },
  },
  {
    name: 'authorization_details narrowed to the allowed type', details: JSON.stringify([{ type: 'payment_initiation' }, { type: 'todo_list', actions: ['read'] }]),
    expected: { decision: 'issued', reason: 'issued' },
  },
  {
    name: 'authorization_details of a type no rule allows', details: JSON.stringify([{ type: 'payment_initiation' }]),
    expected: { decision: 'denied', reason: 'authorization_details.types', check: 'authorization_details.types' },
  },
  {
    name: 'authorization_details the deciding rule allows no type for', details: JSON.stringify([{ type: 'todo_list' }]),
    setup: patchRule('engineering-todo', { authorization_details_types: null }, { authorization_details_types: ['todo_list'] }),
    expected: { decision: 'denied', reason: 'authorization_details.types', check: 'authorization_details.types' },
  },
  {
    name: 'malformed authorization_details (an object without type)', details: JSON.stringify([{ actions: ['read'] }]),
    expected: { decision: 'denied', reason: 'authorization_details.format', check: 'authorization_details.format' },
  },
  {
    name: 'authorization_details that are not JSON', details: 'todo_list',
    expected: { decision: 'denied', reason: 'authorization_details.format', check: 'authorization_details.format' },
  },
  {
    name: 'authorization_details on a policy denial: the policy decides first', user: 'bob', details: JSON.stringify([{ type: 'todo_list' }]),
    expected: { decision: 'denied', reason: 'subject_not_allowed', check: 'policy' },
  },
  { name: 'a DPoP proof binds the ID-JAG to its key', dpop: true, expected: { decision: 'issued', reason: 'issued' } },
  { name: 'a DPoP proof, and the policy denies', dpop: true, user: 'bob', expected: { decision: 'denied', reason: 'subject_not_allowed', check: 'policy' } },
  {
    name: 'a client registered with dpop_bound_access_tokens sends no proof',
    setup: async (a) => {
      expect((await a.patch('/clients/demo-agent', { dpop_bound_access_tokens: true })).status).toBe(200);
      return () => a.patch('/clients/demo-agent', { dpop_bound_access_tokens: null });
    },
    expected: { decision: 'denied', reason: 'dpop_proof', check: 'dpop_proof' },
  },
];

const SECRETS: Record<string, string | undefined> = { 'demo-agent': DEMO_AGENT.secret, 'partner-app': 'partner-app-secret', 'demo-public': undefined };

interface Seen {
  decision: string;
  reason: string;
  error: string | null;
  failed: string | null;
  /** each check's status and the message the client would be given */
  statuses: Record<string, string>;
  scopes: string[];
  /** the authorization_details types granted */
  details: string[];
}

const statusesOf = (checks: { name: string; status: string; message?: string }[]) =>
  Object.fromEntries(checks.map((c) => [c.name, `${c.status}${c.message === undefined ? '' : `: ${c.message}`}`]));

test.each(cases)('$name: the simulator decides what the token endpoint decides', async (c) => {
  const undo = await c.setup?.(api);
  try {
    const user = c.user ?? 'alice';
    const client = c.client ?? 'demo-agent';
    const resource = [c.resource ?? TODO_MCP].flat().map((r) => r.replace('${ISSUER}', idjag.issuer));
    const audience = c.audience ?? TODO_AS;
    const secret = SECRETS[client];

    const proof: Record<string, string> = c.dpop ? { DPoP: await makeProof(key, { htu: `${idjag.issuer}/token` }) } : {};
    const res = await exchange(idjag.url, tokens[user]!, {
      audience, resource, scope: c.scope, authorization_details: c.details, ...(secret === undefined ? { client_id: client } : {}),
    }, secret === undefined ? null : { id: client, secret }, proof);
    const row = await lastAuditRow(idjag);
    const checks = decodeChecks(row.checks, row);
    const endpoint: Seen = {
      decision: row.decision, reason: row.reason, error: row.error, failed: checks.find((x) => x.status === 'failed')?.name ?? null,
      statuses: statusesOf(checks), scopes: row.scopes_granted?.split(' ') ?? [], details: decodeTypes(row.details_granted) ?? [],
    };
    expect(res.status === 200).toBe(c.expected.decision === 'issued');
    if (res.status === 200) expect((decodeJwt(res.body.access_token as string).scope as string).split(' ')).toEqual(endpoint.scopes);
    const types = (objects: { type: string }[] | undefined) => (objects ?? []).map((d) => d.type);
    if (res.status === 200) expect(types(res.body.authorization_details)).toEqual(endpoint.details);

    // the simulator, for the same facts: the user's real login age, so step-up rules see the same
    const authTime = decodeJwt(tokens[user]!).auth_time as number;
    const sim = await api.post('/simulate', {
      client_id: client, user, audience, resource, ...(c.scope ? { scope: c.scope } : {}), ...(c.details ? { authorization_details: c.details } : {}),
      auth_age: Math.max(0, Math.floor(Date.now() / 1000) - authTime),
      ...(c.dpop ? { dpop_jkt: key.jkt } : {}),
    });
    expect(sim.status).toBe(200);
    // the binding the simulator previews is the one the ID-JAG carries
    if (res.status === 200) expect(sim.body.id_jag.cnf).toEqual(decodeJwt(res.body.access_token as string).cnf);
    const simulated: Seen = {
      decision: sim.body.decision, reason: sim.body.reason, error: sim.body.error ?? null,
      failed: sim.body.checks.find((x: { status: string }) => x.status === 'failed')?.name ?? null,
      statuses: statusesOf(sim.body.checks), scopes: sim.body.scopes, details: types(sim.body.authorization_details),
    };
    if (res.status === 200) {
      // the claims the simulator shows are the ID-JAG's, but for what only signing sets (jti, iat, exp) and the
      // login it assumes (auth_time, with no amr)
      const { jti: _j, iat: _i, exp: _e, auth_time: _a, amr: _m, ...signed } = decodeJwt(res.body.access_token as string);
      const { auth_time: _sa, ...shown } = sim.body.id_jag.claims;
      expect(shown).toEqual(signed);
    }

    expect({ decision: endpoint.decision, reason: endpoint.reason }).toEqual({ decision: c.expected.decision, reason: c.expected.reason });
    expect(endpoint.failed).toBe(c.expected.check ?? null);
    // the simulator reports the checks about the client and the decision: each has the endpoint's status and message
    const shared = Object.fromEntries(Object.keys(simulated.statuses).map((name) => [name, endpoint.statuses[name]]));
    expect({ ...simulated, statuses: simulated.statuses }).toEqual({ ...endpoint, statuses: shared });
  } finally {
    await undo?.();
  }
});
