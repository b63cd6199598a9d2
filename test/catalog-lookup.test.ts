/**
 * On PostgreSQL the token exchange reads in one statement (src/db/catalog.ts `lookupExchange`): it must answer
 * exactly what the separate reads answer (the user with their groups, the Resource AS by issuer or alias, the MCP
 * servers, the client's candidate rules, disabled ones too, and the user's aud_sub), for every kind of request.
 * It runs on both dialects: the statement is PostgreSQL's (the exchange uses it there only), but what it must
 * equal is checked wherever the suite runs it.
 */
import { findAudienceSubject, findMcpServers, findResourceServer, lookupExchange, rulesFor } from '../src/db/catalog.ts';
import { findClientRow, findEnabledClient, findEnabledClientCounted } from '../src/db/clients.ts';
import { readCounters } from '../src/db/counters.ts';
import { findMemberBySub, findUserByName } from '../src/db/users.ts';
import { onPostgres } from './helpers/database.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let alice: string;
let bob: string;

beforeAll(async () => {
  idjag = await startTestServer();
  const { db } = idjag.database;
  alice = (await findUserByName(db, 'alice'))!.sub;
  bob = (await findUserByName(db, 'bob'))!.sub;
  const rs = (await findResourceServer(db, 'https://auth.todo.example'))!;
  await db.insertInto('audience_subjects').values({ resource_server_id: rs.id, user_sub: alice, aud_sub: 'alice@todo' }).execute();
  // a second rule of demo-agent on the same Resource AS, disabled: a candidate all the same
  const [seeded] = await db.selectFrom('policy_rules').selectAll().where('id', '=', 'engineering-todo').execute();
  await db.insertInto('policy_rules').values({ ...seeded!, id: 'engineering-todo-disabled', enabled: 0 }).execute();
});

afterAll(() => idjag.dispose());

const separately = async (q: { audience: string; resources: string[]; clientId: string; sub: string }) => {
  const { db } = idjag.database;
  const resourceServer = await findResourceServer(db, q.audience);
  return {
    member: await findMemberBySub(db, q.sub),
    resourceServer,
    mcpServers: await findMcpServers(db, q.resources),
    rules: resourceServer ? await rulesFor(db, q.clientId, resourceServer.id) : [],
    audSub: resourceServer ? await findAudienceSubject(db, resourceServer.id, q.sub) : undefined,
  };
};

const byId = <T extends { id: string }>(list: T[]) => [...list].sort((a, b) => a.id.localeCompare(b.id));

const SUBS = { alice: () => alice, bob: () => bob, nobody: () => 'no-such-user', grouped: () => grouped } as const;
let grouped: string;

beforeAll(async () => {
  // a user in several groups, added in an order that is not the groups' order
  const { db } = idjag.database;
  grouped = 'user-in-groups';
  await db.insertInto('users').values({ sub: grouped, username: 'grouped', email: null, email_verified: 0, name: null, password_hash: null, disabled: 1, created_at: 0, updated_at: 0 }).execute();
  const groups = (await db.selectFrom('groups').select('name').execute()).map((g) => g.name).sort().reverse();
  for (const group_name of groups) await db.insertInto('group_members').values({ group_name, user_sub: grouped }).execute();
});

const lookupOn = onPostgres ? test.each : test.skip.each;

lookupOn([
  ['by issuer, one resource, a user with an aud_sub', 'https://auth.todo.example', ['https://mcp.todo.example/mcp'], 'demo-agent', 'alice'],
  ['by alias, a user without one', 'urn:example:todo', ['https://mcp.todo.example/mcp'], 'demo-agent', 'bob'],
  ['audience only', 'https://auth.todo.example', [], 'demo-agent', 'alice'],
  ['several resources, one unknown', 'https://auth.todo.example', ['https://mcp.todo.example/mcp', 'https://nowhere.example/mcp'], 'demo-agent', 'alice'],
  ['a client with no rule there', 'https://auth.todo.example', ['https://mcp.todo.example/mcp'], 'idjag-admin-cli', 'alice'],
  ['an unknown audience', 'https://unknown.example', ['https://mcp.todo.example/mcp'], 'demo-agent', 'alice'],
  ['an unknown user', 'https://auth.todo.example', ['https://mcp.todo.example/mcp'], 'demo-agent', 'nobody'],
  ['a disabled user in every group', 'https://auth.todo.example', ['https://mcp.todo.example/mcp'], 'demo-agent', 'grouped'],
] as const)('%s: the same answers as the separate reads', async (_name, audience, resources, clientId, user) => {
  const q = { audience, resources: [...resources], clientId, sub: SUBS[user]() };
  const [one, apart] = await Promise.all([lookupExchange(idjag.database.db, q), separately(q)]);
  expect({ ...one, rules: byId(one.rules), mcpServers: byId(one.mcpServers) }).toEqual({ ...apart, rules: byId(apart.rules), mcpServers: byId(apart.mcpServers) });
  if (audience === 'https://auth.todo.example' && clientId === 'demo-agent') expect(one.rules.map((r) => r.id)).toContain('engineering-todo-disabled');
  if (user === 'alice' && audience !== 'https://unknown.example') expect(one.audSub).toBe('alice@todo');
  if (user === 'nobody') expect(one.member).toBeUndefined();
  if (user === 'grouped') expect(one.member!.groups.length).toBeGreaterThan(1);
});

test.each([
  ['an enabled client', 'demo-agent'],
  ['an unknown client', 'no-such-client'],
  ['a disabled client', 'disabled-client'],
] as const)('the client with the change counters (read ahead of a token exchange), %s: the client as findEnabledClient reads it, the counters as readCounters', async (_name, clientId) => {
  const { db } = idjag.database;
  if (clientId === 'disabled-client' && !(await findClientRow(db, clientId))) {
    const demo = (await findClientRow(db, 'demo-agent'))!;
    await db.insertInto('clients').values({ ...demo, client_id: clientId, disabled: 1, created_at: 0, updated_at: 0 }).execute();
  }
  const [both, client, counters] = await Promise.all([findEnabledClientCounted(db, clientId), findEnabledClient(db, clientId), readCounters(db)]);
  if (clientId === 'demo-agent') {
    expect(both).toEqual({ client, counters });
    expect(counters).toEqual({ directory: expect.any(Number), catalog: expect.any(Number) });
  } else {
    expect(both).toBeUndefined();
  }
});
