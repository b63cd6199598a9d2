/**
 * The token exchange reads the catalog in one lookup (src/db/catalog.ts `lookupTarget`): it must answer exactly
 * what the four separate reads answer (the Resource AS by issuer or alias, the MCP servers, the client's candidate
 * rules, disabled ones too, and the user's aud_sub), for every kind of request, on both dialects.
 */
import { findAudienceSubject, findMcpServers, findResourceServer, lookupTarget, rulesFor } from '../src/db/catalog.ts';
import { findUserByName } from '../src/db/users.ts';
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
    resourceServer,
    mcpServers: await findMcpServers(db, q.resources),
    rules: resourceServer ? await rulesFor(db, q.clientId, resourceServer.id) : [],
    audSub: resourceServer ? await findAudienceSubject(db, resourceServer.id, q.sub) : undefined,
  };
};

const byId = <T extends { id: string }>(list: T[]) => [...list].sort((a, b) => a.id.localeCompare(b.id));

test.each([
  ['by issuer, one resource, a user with an aud_sub', 'https://auth.todo.example', ['https://mcp.todo.example/mcp'], 'demo-agent', 'alice'],
  ['by alias, a user without one', 'urn:example:todo', ['https://mcp.todo.example/mcp'], 'demo-agent', 'bob'],
  ['audience only', 'https://auth.todo.example', [], 'demo-agent', 'alice'],
  ['several resources, one unknown', 'https://auth.todo.example', ['https://mcp.todo.example/mcp', 'https://nowhere.example/mcp'], 'demo-agent', 'alice'],
  ['a client with no rule there', 'https://auth.todo.example', ['https://mcp.todo.example/mcp'], 'idjag-admin-cli', 'alice'],
  ['an unknown audience', 'https://unknown.example', ['https://mcp.todo.example/mcp'], 'demo-agent', 'alice'],
])('%s: the same answers as the separate reads', async (_name, audience, resources, clientId, user) => {
  const q = { audience, resources, clientId, sub: user === 'alice' ? alice : bob };
  const [one, four] = await Promise.all([lookupTarget(idjag.database.db, q), separately(q)]);
  expect({ ...one, rules: byId(one.rules), mcpServers: byId(one.mcpServers) }).toEqual({ ...four, rules: byId(four.rules), mcpServers: byId(four.mcpServers) });
  if (audience === 'https://auth.todo.example' && clientId === 'demo-agent') expect(one.rules.map((r) => r.id)).toContain('engineering-todo-disabled');
  if (user === 'alice' && audience !== 'https://unknown.example') expect(one.audSub).toBe('alice@todo');
});
