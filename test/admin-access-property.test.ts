/**
 * Effective access equals the simulator, user by user: over random rule sets (fast-check), every row effective
 * access reports, and every row it does not, is checked against what the simulator (the token endpoint's own
 * pipeline) decides for the same client, user, target and scopes at the same instant. The catalog holds what the
 * checks before the policy refuse (a disabled client, a disabled user, a disabled MCP server, a disabled Resource
 * AS) and users who share some groups, so the equivalence classes effective access decides by are exercised.
 * Runs on the database of the suite (no server): the simulator and effective access read it directly.
 */
import fc from 'fast-check';
import { accessRows, planAccess, type AccessRow } from '../src/admin/access.ts';
import { applyDocument, parseDocument } from '../src/admin/document.ts';
import { simulate } from '../src/admin/simulate.ts';
import { migrateToLatest, openDatabase, type Database } from '../src/db/index.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { TOKEN_EXCHANGE } from './helpers/exchange.ts';

const AT = 1_800_000_000;
const RS1 = 'https://as1.example';
const RS2 = 'https://as2.example';
const M1 = 'https://m1.as1.example/mcp';
const M2 = 'https://m2.as1.example/mcp';
const M3 = 'https://m3.as1.example/mcp';
const M4 = 'https://m4.as2.example/mcp';
const SCOPES: Record<string, string[]> = { [M1]: ['a', 'b', 'c'], [M2]: ['b', 'd'], [M3]: ['a'], [M4]: ['a', 'b'] };
const ALL_SCOPES = ['a', 'b', 'c', 'd'];
const GROUPS = ['g1', 'g2', 'g3', 'g4'];
const USERS: { username: string; groups: string[]; disabled?: boolean }[] = [
  { username: 'u1', groups: ['g1'] },
  { username: 'u2', groups: ['g1', 'g2'] },
  { username: 'u3', groups: ['g2', 'g3'] },
  { username: 'u4', groups: [] },
  { username: 'u5', groups: ['g1'], disabled: true },
  { username: 'u6', groups: ['g1'] },
];
/** `off` is disabled: the pipeline refuses it before the policy */
const CLIENTS = ['c1', 'c2', 'off'];
/** every target a request can name: a Resource AS alone, or one of its MCP servers */
const TARGETS: { audience: string; resource?: string }[] = [
  { audience: RS1 }, { audience: RS1, resource: M1 }, { audience: RS1, resource: M2 }, { audience: RS1, resource: M3 },
  { audience: RS2 }, { audience: RS2, resource: M4 },
];

let testDb: TestDatabase;
let database: Database;
const ids: { rs: Record<string, string>; mcp: Record<string, string>; sub: Record<string, string> } = { rs: {}, mcp: {}, sub: {} };

beforeAll(async () => {
  testDb = await createTestDatabase('idjag-access-property');
  database = openDatabase(testDb.location);
  await migrateToLatest(database.db);
  const confidential = (id: string) => ({ client_id: id, client_secret: `${id}-secret-123`, token_endpoint_auth_method: 'client_secret_basic', grant_types: [TOKEN_EXCHANGE], response_types: [], redirect_uris: [] });
  await applyDocument(database.db, parseDocument({
    groups: GROUPS.map((name) => ({ name })),
    users: USERS.map((u) => ({ username: u.username, groups: u.groups, ...(u.disabled ? { disabled: true } : {}) })),
    clients: [confidential('c1'), confidential('c2'), { ...confidential('off'), disabled: true }],
    resource_servers: [
      { issuer: RS1, name: 'AS 1', mcp_servers: [{ resource: M1, name: 'M1', scopes: SCOPES[M1] }, { resource: M2, name: 'M2', scopes: SCOPES[M2] }, { resource: M3, name: 'M3', scopes: SCOPES[M3], enabled: false }] },
      { issuer: RS2, name: 'AS 2', enabled: false, mcp_servers: [{ resource: M4, name: 'M4', scopes: SCOPES[M4] }] },
    ],
  }), 'test');
  for (const r of await database.db.selectFrom('resource_servers').select(['id', 'issuer']).execute()) ids.rs[r.issuer] = r.id;
  for (const m of await database.db.selectFrom('mcp_servers').select(['id', 'resource']).execute()) ids.mcp[m.resource] = m.id;
  for (const u of await database.db.selectFrom('users').select(['sub', 'username']).execute()) ids.sub[u.username] = u.sub;
});
afterAll(async () => {
  await database?.close();
  await testDb?.dispose();
});

const subset = <T>(list: T[], min = 0) => fc.subarray(list, { minLength: min });
/** a bound near AT, edges included */
const bound = fc.option(fc.constantFrom(AT - 3600, AT - 1, AT, AT + 1, AT + 3600), { nil: null });

interface RuleSpec {
  client: string;
  target: { audience: string; resource: string | null };
  who: { kind: 'everyone' | 'groups' | 'users'; list: string[] };
  /** filtered to what the target defines (the first of those when none is left) */
  scopePick: string[];
  /** filtered to the rule's scopes */
  defaultPick: string[];
  enabled: boolean;
  maxAuthAge: number | null;
  lifetime: number;
  rsClientId: string | null;
  notBefore: number | null;
  /** dropped when not after notBefore (the admin refuses such a window) */
  expiresAt: number | null;
}

const ruleArb: fc.Arbitrary<RuleSpec> = fc.record({
  client: fc.constantFrom(...CLIENTS),
  target: fc.constantFrom(
    { audience: RS1, resource: null }, { audience: RS1, resource: M1 }, { audience: RS1, resource: M2 }, { audience: RS1, resource: M3 },
    { audience: RS2, resource: null }, { audience: RS2, resource: M4 },
  ),
  who: fc.oneof(
    fc.constant({ kind: 'everyone' as const, list: [] as string[] }),
    subset(GROUPS, 1).map((list) => ({ kind: 'groups' as const, list })),
    subset(USERS.map((u) => u.username), 1).map((list) => ({ kind: 'users' as const, list })),
  ),
  scopePick: subset(ALL_SCOPES, 1),
  defaultPick: subset(ALL_SCOPES),
  // mostly enabled: a disabled rule decides less
  enabled: fc.constantFrom(true, true, true, false),
  maxAuthAge: fc.option(fc.constantFrom(0, 60), { nil: null }),
  lifetime: fc.integer({ min: 1, max: 3600 }),
  rsClientId: fc.option(fc.constantFrom('x', 'y'), { nil: null }),
  notBefore: bound,
  expiresAt: bound,
});

/** The random rules into the table as the admin would have stored them (scopes within the MCP server's, defaults within those). */
async function storeRules(rules: RuleSpec[]): Promise<void> {
  const db = database.db;
  await db.deleteFrom('policy_rules').execute();
  const rows = rules.map((r, i) => {
    const defined = r.target.resource ? SCOPES[r.target.resource]! : ALL_SCOPES;
    const scopes = r.scopePick.filter((s) => defined.includes(s));
    const allowed = scopes.length ? scopes : [defined[0]!];
    return {
      id: `r${String(i).padStart(2, '0')}`,
      client_id: r.client,
      resource_server_id: ids.rs[r.target.audience]!,
      mcp_server_id: r.target.resource ? ids.mcp[r.target.resource]! : null,
      subject_kind: r.who.kind,
      subjects: JSON.stringify(r.who.kind === 'users' ? r.who.list.map((u) => ids.sub[u]) : r.who.list),
      scopes: JSON.stringify(allowed),
      default_scopes: JSON.stringify(r.defaultPick.filter((s) => allowed.includes(s))),
      rs_client_id: r.rsClientId,
      lifetime: r.lifetime,
      max_auth_age: r.maxAuthAge,
      enabled: r.enabled ? 1 : 0,
      description: null,
      authorization_details_types: '[]',
      not_before: r.notBefore,
      expires_at: r.expiresAt !== null && r.notBefore !== null && r.expiresAt <= r.notBefore ? null : r.expiresAt,
      created_at: AT, updated_at: AT, created_by: 'test', updated_by: 'test',
    };
  });
  if (rows.length) await db.insertInto('policy_rules').values(rows).execute();
}

const rowKey = (user: string, client: string, t: { audience: string; resource?: string }) => `${user} ${client} ${t.audience} ${t.resource ?? '-'}`;

/** What effective access says, and what the simulator decides for every user, client, target and scope request. */
async function compare(): Promise<void> {
  const plan = await planAccess(database.db, {}, AT);
  const reported = new Map<string, AccessRow>();
  for await (const row of accessRows(database.db, plan)) {
    const key = rowKey(row.username, row.client_id, { audience: row.audience, ...(row.resource ? { resource: row.resource } : {}) });
    expect(reported.has(key)).toBe(false);
    reported.set(key, row);
  }
  for (const user of USERS) {
    for (const client of CLIENTS) {
      for (const target of TARGETS) {
        const row = reported.get(rowKey(user.username, client, target));
        const ask = async (scope?: string) => simulate(database.db, {
          client_id: client, user: user.username, audience: target.audience, ...(target.resource ? { resource: target.resource } : {}),
          ...(scope ? { scope } : {}), auth_age: 0, dpop: false,
        }, { issuer: 'http://localhost' }, AT);
        const plain = await ask();
        const where = `${rowKey(user.username, client, target)}`;
        // a request without scope: granted exactly the default scopes effective access reports
        expect([where, plain.decision === 'issued' ? plain.scopes : []]).toEqual([where, row?.default_scopes ?? []]);
        const granted: string[] = [];
        for (const scope of target.resource ? SCOPES[target.resource]! : ALL_SCOPES) {
          const one = await ask(scope);
          if (one.decision === 'issued') {
            granted.push(scope);
            expect([where, scope, one.rule_ids.every((id) => row?.rule_ids.includes(id))]).toEqual([where, scope, true]);
            expect(one.id_jag!.expires_in).toBeLessThanOrEqual(row!.lifetime);
            expect(row!.rs_client_ids).toContain(one.id_jag!.client_id);
          }
        }
        // each scope asked for alone: granted exactly when effective access lists it
        expect([where, granted.sort()]).toEqual([where, row?.scopes ?? []]);
        // and a row exactly when something is granted
        expect([where, row !== undefined]).toEqual([where, plain.decision === 'issued' || granted.length > 0]);
      }
    }
  }
}

test('effective access equals the simulator, user by user, over random rule sets', async () => {
  await fc.assert(fc.asyncProperty(fc.array(ruleArb, { minLength: 0, maxLength: 8 }), async (rules) => {
    await storeRules(rules);
    await compare();
  }), { numRuns: 25 });
}, 240_000);

test('a rule set where everyone in a big class shares a decision: one class per client and Resource AS, expanded to each user', async () => {
  // everyone through c1 on M1; g1 also gets scope c through c2 (u1, u2 and u6 share that class; u5 is disabled)
  await storeRules([
    { client: 'c1', target: { audience: RS1, resource: M1 }, who: { kind: 'everyone', list: [] }, scopePick: ['a'], defaultPick: ['a'], enabled: true, maxAuthAge: null, lifetime: 300, rsClientId: null, notBefore: null, expiresAt: null },
    { client: 'c2', target: { audience: RS1, resource: M1 }, who: { kind: 'groups', list: ['g1'] }, scopePick: ['c'], defaultPick: [], enabled: true, maxAuthAge: 60, lifetime: 120, rsClientId: 'y', notBefore: null, expiresAt: AT + 60 },
  ]);
  const plan = await planAccess(database.db, { resource: M1 }, AT);
  const rows = [];
  for await (const row of accessRows(database.db, plan)) rows.push(row);
  expect(rows.map((r) => `${r.username}/${r.client_id}`)).toEqual(['u1/c1', 'u1/c2', 'u2/c1', 'u2/c2', 'u3/c1', 'u4/c1', 'u6/c1', 'u6/c2']);
  expect(rows.find((r) => r.username === 'u6' && r.client_id === 'c2')).toMatchObject({
    resource: M1, scopes: ['c'], default_scopes: [], rule_ids: ['r01'], lifetime: 120, rs_client_ids: ['y'], max_auth_age: 60, expires_at: new Date((AT + 60) * 1000).toISOString(),
  });
  await compare();
});
