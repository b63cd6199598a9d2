/**
 * The token exchange's lookup cache (src/exchange/lookup-cache.ts): held while the counters stand still, each
 * part dropped when its counter moves, never keeping an answer read across a move, bounded, and holding only
 * what can issue.
 */
import type { ExchangeQuery, McpServerRecord, ResourceServerFacts } from '../../src/db/catalog.ts';
import type { Member } from '../../src/db/users.ts';
import { LookupCache, type LookupReads } from '../../src/exchange/lookup-cache.ts';
import type { Rule } from '../../src/policy/index.ts';

const RS: ResourceServerFacts = { id: 'rs-1', issuer: 'https://as.example', name: 'AS', enabled: true, release: { claims: [], audTenant: null, subIdFormat: null } };
const MCP: McpServerRecord = { id: 'mcp-1', resource: 'https://mcp.example/a', resourceServerId: 'rs-1', scopes: ['read'], enabled: true };
const member = (sub: string, name = 'Alice'): Member => ({ user: { sub, username: sub, email: null, email_verified: 0, name, disabled: 0 }, groups: ['eng'] });
const q = (over: Partial<ExchangeQuery> = {}): ExchangeQuery => ({ sub: 'alice', audience: 'https://as.example', resources: ['https://mcp.example/a'], clientId: 'agent', ...over });
const at = (directory: number, catalog: number) => ({ directory, catalog });

/** Reads that count themselves and answer from `data`, which a test may change between lookups. */
function database() {
  const data = { members: new Map([['alice', member('alice')], ['bob', member('bob')]]), rs: RS as ResourceServerFacts | undefined, rules: [] as Rule[], audSub: 'a@as' as string | undefined };
  const calls = { member: 0, target: 0, audSub: 0 };
  const reads: LookupReads = {
    member: async (sub) => (calls.member++, data.members.get(sub)),
    target: async ({ audience, resources }) => {
      calls.target++;
      return { resourceServer: audience === RS.issuer ? data.rs : undefined, mcpServers: resources.includes(MCP.resource) ? [MCP] : [], rules: data.rules };
    },
    audSub: async () => (calls.audSub++, data.audSub),
  };
  return { data, calls, reads };
}

test('a second lookup under the same counters reads nothing, and answers the same', async () => {
  const cache = new LookupCache();
  const { calls, reads } = database();
  const first = await cache.lookup(q(), at(1, 1), reads);
  const second = await cache.lookup(q(), at(1, 1), reads);
  expect(calls).toEqual({ member: 1, target: 1, audSub: 1 });
  expect(second).toEqual(first);
  expect(second).toMatchObject({ member: member('alice'), resourceServer: RS, mcpServers: [MCP], audSub: 'a@as' });
});

test('the directory counter moves: the user is read again, the target is not', async () => {
  const cache = new LookupCache();
  const { data, calls, reads } = database();
  await cache.lookup(q(), at(1, 1), reads);
  data.members.set('alice', member('alice', 'Alice Renamed'));
  data.audSub = 'new@as';
  const next = await cache.lookup(q(), at(2, 1), reads);
  expect(next.member!.user.name).toBe('Alice Renamed');
  expect(next.audSub).toBe('new@as');
  expect(calls).toEqual({ member: 2, target: 1, audSub: 2 });
});

test('the catalog counter moves: the target is read again, the user is not', async () => {
  const cache = new LookupCache();
  const { data, calls, reads } = database();
  await cache.lookup(q(), at(1, 1), reads);
  data.rs = { ...RS, enabled: false };
  expect((await cache.lookup(q(), at(1, 2), reads)).resourceServer!.enabled).toBe(false);
  expect(calls).toEqual({ member: 1, target: 2, audSub: 1 });
});

test('an answer read while the counters moved is not kept under the new ones', async () => {
  const cache = new LookupCache();
  const { data, reads } = database();
  // the first lookup's read of the user is slow: it answers with the user as they were (before the change)
  let release!: () => void;
  const slow: LookupReads = { ...reads, member: async (sub) => {
    const before = data.members.get(sub);
    await new Promise<void>((resolve) => { release = resolve; });
    return before;
  } };
  const stale = cache.lookup(q(), at(1, 1), slow);
  await new Promise((resolve) => setImmediate(resolve));
  // the change commits; a request that read the new counters is answered with the new data
  data.members.set('alice', { ...member('alice'), user: { ...member('alice').user, disabled: 1 } });
  expect((await cache.lookup(q(), at(2, 1), reads)).member!.user.disabled).toBe(1);
  release();
  expect((await stale).member!.user.disabled).toBe(0);
  // what the slow read brought back went into the generation it was asked for, now gone
  expect((await cache.lookup(q(), at(2, 1), reads)).member!.user.disabled).toBe(1);
});

test.each([
  ['an unknown user', q({ sub: 'nobody' }), 'member'],
  ['an unknown audience', q({ audience: 'https://unknown.example' }), 'target'],
  ['a resource that is no MCP server', q({ resources: ['https://mcp.example/a', 'https://nowhere.example/mcp'] }), 'target'],
] as const)('%s: read every time (nothing that cannot issue is kept)', async (_name, query, missing) => {
  const cache = new LookupCache();
  const { calls, reads } = database();
  await cache.lookup(query, at(1, 1), reads);
  await cache.lookup(query, at(1, 1), reads);
  expect(calls[missing]).toBe(2);
  expect(cache.size.users).toBe(0);
});

test('with `all` (PostgreSQL), anything missing is read in one call', async () => {
  const cache = new LookupCache();
  const { reads } = database();
  let all = 0;
  const one: LookupReads = { ...reads, all: async (query) => {
    all++;
    return { member: await reads.member(query.sub), ...(await reads.target(query)), audSub: 'a@as' };
  } };
  await cache.lookup(q(), at(1, 1), one);
  await cache.lookup(q(), at(1, 1), one);
  await cache.lookup(q({ sub: 'bob' }), at(1, 1), one);
  expect(all).toBe(2);
});

test('bounded: the least recently used user goes first, and targets weigh their rules', async () => {
  const cache = new LookupCache({ users: 2, targetRules: 10 });
  const { data, calls, reads } = database();
  data.members.set('carol', member('carol'));
  for (const sub of ['alice', 'bob', 'carol']) await cache.lookup(q({ sub }), at(1, 1), reads);
  expect(cache.size.users).toBe(2);
  await cache.lookup(q({ sub: 'alice' }), at(1, 1), reads);
  expect(calls.member).toBe(4);
  // a target with more candidate rules than the limit is not kept
  data.rules = Array.from({ length: 20 }, (_, i) => ({ id: `r${i}` }) as Rule);
  await cache.lookup(q({ clientId: 'big' }), at(1, 1), reads);
  expect(cache.size.targets).toBe(1);
});

test('what is held cannot be changed by whoever got it', async () => {
  const cache = new LookupCache();
  const { reads } = database();
  await cache.lookup(q(), at(1, 1), reads);
  const held = await cache.lookup(q(), at(1, 1), reads);
  expect(() => { (held.member!.groups as string[]).push('admins'); }).toThrow(TypeError);
  expect((await cache.lookup(q(), at(1, 1), reads)).member!.groups).toEqual(['eng']);
});
