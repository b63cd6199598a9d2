/**
 * The token exchange keeps what it read while the change counters stand still (src/exchange/lookup-cache.ts,
 * migrations/0015_change_counters.ts). What it must never do is act on what changed: every kind of change to the
 * directory or the catalog, made straight in the database (as a script or another node would), is seen by the
 * very next exchange, and undoing it is seen too. And a held lookup costs no read beyond the client's.
 */
import { decodeJwt } from 'jose';
import { sql } from 'kysely';
import { Migrator } from 'kysely/migration';
import { migrations } from '../migrations/index.ts';
import { migrateToLatest, openDatabase } from '../src/db/index.ts';
import { readCounters } from '../src/db/counters.ts';
import { createTestDatabase } from './helpers/database.ts';
import { findResourceServer } from '../src/db/catalog.ts';
import { findUserByName } from '../src/db/users.ts';
import type { DB } from '../src/db/index.ts';
import { signIn } from './helpers/browser.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let idToken: string;
let alice: string;
let todoAs: string;

beforeAll(async () => {
  idjag = await startTestServer();
  idToken = (await signIn(idjag.url)).tokens.id_token as string;
  alice = (await findUserByName(idjag.database.db, 'alice'))!.sub;
  todoAs = (await findResourceServer(idjag.database.db, TODO_AS))!.id;
});

afterAll(() => idjag.dispose());

const db = (): DB => idjag.database.db;
const claims = (body: Record<string, unknown>) => decodeJwt(String(body.access_token));

interface Case {
  change: () => Promise<unknown>;
  undo: () => Promise<unknown>;
  /** what the exchange answers once changed (status, and the error or what the ID-JAG says) */
  changed: (res: { status: number; body: Record<string, unknown> }) => void;
  over?: Record<string, string>;
}

const refused = (error: string) => (res: { status: number; body: Record<string, unknown> }) => {
  expect(res.status).toBe(400);
  expect(res.body.error).toBe(error);
};

const CASES: Record<string, () => Case> = {
  'the user is disabled': () => ({
    change: () => db().updateTable('users').set({ disabled: 1 }).where('sub', '=', alice).execute(),
    undo: () => db().updateTable('users').set({ disabled: 0 }).where('sub', '=', alice).execute(),
    changed: refused('invalid_grant'),
  }),
  'the user leaves the group the rule names': () => ({
    change: () => db().deleteFrom('group_members').where('user_sub', '=', alice).where('group_name', '=', 'engineering').execute(),
    undo: () => db().insertInto('group_members').values({ user_sub: alice, group_name: 'engineering' }).execute(),
    changed: refused('invalid_target'),
  }),
  'the user\'s email changes': () => ({
    change: () => db().updateTable('users').set({ email: 'alice.new@example.com' }).where('sub', '=', alice).execute(),
    undo: () => db().updateTable('users').set({ email: 'alice@example.com' }).where('sub', '=', alice).execute(),
    changed: (res) => expect(claims(res.body).email).toBe('alice.new@example.com'),
  }),
  'an aud_sub is mapped for the user': () => ({
    change: () => db().insertInto('audience_subjects').values({ resource_server_id: todoAs, user_sub: alice, aud_sub: 'alice@todo' }).execute(),
    undo: () => db().deleteFrom('audience_subjects').where('user_sub', '=', alice).execute(),
    changed: (res) => expect(claims(res.body).aud_sub).toBe('alice@todo'),
  }),
  'the rule is disabled': () => ({
    change: () => db().updateTable('policy_rules').set({ enabled: 0 }).where('id', '=', 'engineering-todo').execute(),
    undo: () => db().updateTable('policy_rules').set({ enabled: 1 }).where('id', '=', 'engineering-todo').execute(),
    changed: refused('invalid_target'),
  }),
  'the rule allows one scope less': () => ({
    change: () => db().updateTable('policy_rules').set({ scopes: '["todos.read"]', default_scopes: '["todos.read"]' }).where('id', '=', 'engineering-todo').execute(),
    undo: () => db().updateTable('policy_rules').set({ scopes: '["todos.read","todos.write"]', default_scopes: '["todos.read","todos.write"]' }).where('id', '=', 'engineering-todo').execute(),
    changed: (res) => expect(claims(res.body).scope).toBe('todos.read'),
  }),
  'the Resource AS gets a tenant': () => ({
    change: () => db().updateTable('resource_servers').set({ aud_tenant: 'acme' }).where('id', '=', todoAs).execute(),
    undo: () => db().updateTable('resource_servers').set({ aud_tenant: null }).where('id', '=', todoAs).execute(),
    changed: (res) => expect(claims(res.body).aud_tenant).toBe('acme'),
  }),
  'the alias used is removed': () => ({
    change: () => db().deleteFrom('resource_server_aliases').where('alias', '=', 'urn:example:todo').execute(),
    undo: () => db().insertInto('resource_server_aliases').values({ alias: 'urn:example:todo', resource_server_id: todoAs }).execute(),
    changed: refused('invalid_target'),
    over: { audience: 'urn:example:todo' },
  }),
  'the MCP server is disabled': () => ({
    change: () => db().updateTable('mcp_servers').set({ enabled: 0 }).where('resource', '=', TODO_MCP).execute(),
    undo: () => db().updateTable('mcp_servers').set({ enabled: 1 }).where('resource', '=', TODO_MCP).execute(),
    changed: refused('invalid_target'),
  }),
};

test.each(Object.keys(CASES))('%s: the next exchange sees it, and sees it undone', async (name) => {
  const c = CASES[name]!();
  const ask = async () => {
    const res = await exchange(idjag.url, idToken, c.over ?? {});
    return { status: res.status, body: res.body as Record<string, unknown> };
  };
  // twice first: the second is answered from what the first read
  expect((await ask()).status).toBe(200);
  const before = await ask();
  expect(before.status).toBe(200);
  await c.change();
  c.changed(await ask());
  await c.undo();
  const after = await ask();
  expect(after.status).toBe(200);
  expect(claims(after.body)).toMatchObject({ scope: claims(before.body).scope, email: claims(before.body).email });
  expect(claims(after.body).aud_sub).toBe(claims(before.body).aud_sub);
  expect(claims(after.body).aud_tenant).toBe(claims(before.body).aud_tenant);
});

/** The statements the server runs while `run` does (all go through the database's executor). */
async function statementsOf(run: () => Promise<unknown>): Promise<string[]> {
  const executor = db().getExecutor();
  const original = executor.executeQuery.bind(executor);
  const statements: string[] = [];
  executor.executeQuery = ((query: Parameters<typeof original>[0]) => {
    statements.push(query.sql);
    return original(query);
  }) as typeof executor.executeQuery;
  try {
    await run();
  } finally {
    executor.executeQuery = original;
  }
  // the rate limits' and the audit log's writes are not the exchange's reads
  return statements.filter((s) => !/rate_limits|audit_log|audit_values/.test(s));
}

test('an exchange whose user and target are held reads only its client, with the counters in the same statement', async () => {
  expect((await exchange(idjag.url, idToken)).status).toBe(200);
  const statements = await statementsOf(async () => expect((await exchange(idjag.url, idToken)).status).toBe(200));
  expect(statements).toHaveLength(1);
  expect(statements[0]).toMatch(/from "clients"/);
  expect(statements[0]).toMatch(/from "change_counters"/);
});

test('after a change to the directory, the user is read again, and the target is not', async () => {
  expect((await exchange(idjag.url, idToken)).status).toBe(200);
  await db().updateTable('users').set({ name: 'Alice A.' }).where('sub', '=', alice).execute();
  const statements = await statementsOf(async () => expect((await exchange(idjag.url, idToken)).status).toBe(200));
  expect(statements.some((s) => /from "users"/.test(s))).toBe(true);
  // on PostgreSQL everything is one statement (one round trip), the target with it
  if (!statements.some((s) => /json_agg/.test(s))) expect(statements.some((s) => /from "resource_servers"/.test(s))).toBe(false);
  await db().updateTable('users').set({ name: 'Alice Anderson' }).where('sub', '=', alice).execute();
});

test('a change in a transaction that rolls back leaves the counters where they were', async () => {
  const counters = () => db().selectFrom('change_counters').select(['name', 'counter']).orderBy('name').execute();
  const before = await counters();
  await db().transaction().execute(async (trx) => {
    await trx.updateTable('users').set({ disabled: 1 }).where('sub', '=', alice).execute();
    throw new Error('roll back');
  }).catch(() => {});
  expect(await counters()).toEqual(before);
  await sql`update policy_rules set enabled = enabled where id = 'engineering-todo'`.execute(db());
  expect((await counters()).find((c) => c.name === 'catalog')!.counter).toBeGreaterThan(before.find((c) => c.name === 'catalog')!.counter);
});

test('0015_change_counters down removes the counters and their triggers, up brings them back working', async () => {
  const scratch = await createTestDatabase('idjag-counters');
  const database = openDatabase(scratch.location);
  try {
    await migrateToLatest(database.db);
    const migrator = new Migrator({ db: database.db, provider: { getMigrations: async () => migrations } });
    expect((await migrator.migrateTo('0014_audit_values')).error).toBeUndefined();
    await expect(readCounters(database.db)).rejects.toThrow();
    // no trigger is left to name the missing table
    await database.db.insertInto('users').values({ sub: 's1', username: 'u1', email: null, email_verified: 0, name: null, password_hash: null, disabled: 0, created_at: 0, updated_at: 0 }).execute();
    expect((await migrateToLatest(database.db)).applied).toEqual(['0015_change_counters']);
    const before = await readCounters(database.db);
    await database.db.updateTable('users').set({ name: 'n' }).where('sub', '=', 's1').execute();
    await database.db.insertInto('resource_servers').values({ id: 'rs', issuer: 'https://rs.example', name: 'rs', enabled: 1, created_at: 0, updated_at: 0, released_claims: '[]', aud_tenant: null, sub_id_format: null }).execute();
    const after = await readCounters(database.db);
    expect(after.directory).toBeGreaterThan(before.directory);
    expect(after.catalog).toBeGreaterThan(before.catalog);
  } finally {
    await database.close();
    await scratch.dispose();
  }
});
