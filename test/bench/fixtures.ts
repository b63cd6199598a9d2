/**
 * The benchmark's database: the seed, a client_credentials client for the baseline, and synthetic policy
 * rules inserted in bulk (one transaction of prepared statements, not one applyDocument per rule; or through
 * kysely on PostgreSQL, for the `--db postgres` comparison).
 */
import { randomUUID } from 'node:crypto';
import type SQLite from 'better-sqlite3';
import { decodeJwt, decodeProtectedHeader, importJWK, SignJWT } from 'jose';
import { applyDocument, parseDocument } from '../../src/admin/document.ts';
import { migrateToLatest, now, openDatabase, type Database, type DB } from '../../src/db/index.ts';
import type { SubjectKind } from '../../src/db/schema.ts';
import { activeKey, loadKeySet } from '../../src/oidc/keys.ts';
import { applySeed } from '../../seed/index.ts';
import { TOKEN_EXCHANGE } from '../helpers/exchange.ts';

export const BENCH_CC = { id: 'bench-cc', secret: 'bench-cc-secret-0123456789' };
export const TODO_AS = 'https://auth.todo.example';
export const TODO_MCP = 'https://mcp.todo.example/mcp';

/** The SQLite flavour of the database handle: the benchmark works on SQLite files and reads their handle. */
export type SqliteDatabase = Extract<Database, { dialect: 'sqlite' }>;

/** openDatabase on a SQLite file, typed as such (the benchmark needs the better-sqlite3 handle). */
export function openSqlite(path: string): SqliteDatabase {
  const database = openDatabase(path);
  if (database.dialect !== 'sqlite') throw new Error(`the benchmark needs a SQLite file, not ${path}`);
  return database;
}

/**
 * A fresh database with the schema, the seed and the baseline client, as it will be when the server starts:
 * `path` is a SQLite file or a postgres:// URL (all through kysely and the app's own seed and applyDocument).
 */
export async function prepareDatabase(path: string): Promise<void> {
  const database = openDatabase(path);
  try {
    await migrateToLatest(database.db);
    // seed.json uses no ${ISSUER}; the real issuer (with the port) is only known once the server listens
    await applySeed(database.db, 'http://127.0.0.1');
    await applyDocument(database.db, parseDocument({
      clients: [{
        client_id: BENCH_CC.id,
        client_secret: BENCH_CC.secret,
        client_name: 'Benchmark baseline (client_credentials only)',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      }],
    }), 'bench');
  } finally {
    await database.close();
  }
}

export interface SyntheticRules {
  /** prefix of every synthetic id, so batches never collide */
  prefix: string;
  /** synthetic clients to create; each gets `rules / clients` rules, one of them on the todo Resource AS */
  clients: number;
  /** synthetic Resource ASes to create, three MCP servers each */
  servers: number;
  /** rules of demo-agent on the synthetic Resource ASes (never on the todo AS: its candidate set stays one rule) */
  demoAgentRules: number;
  /** how many rules to add in all */
  rules: number;
}

const WHO: [string, string][] = [['groups', '["engineering"]'], ['everyone', '[]'], ['groups', '["sales","engineering"]'], ['users', '["00000000-0000-4000-8000-000000000000"]']];

interface SyntheticRows {
  clients: { id: string; metadata: string }[];
  servers: { id: string; issuer: string; name: string }[];
  mcp: { id: string; resource: string; name: string; rs: string }[];
  rules: { id: string; client: string; rs: string; mcp: string | null; kind: string; subjects: string; rsClientId: string | null }[];
}

const SCOPES = '["data.read","data.write"]';

/**
 * The rows of a batch: `demoAgentRules` rules of demo-agent spread over the synthetic ASes' MCP servers, one per
 * synthetic client on the todo MCP server (while they last), the rest between synthetic clients and synthetic
 * ASes, round robin. `todo`: the seed's todo Resource AS and its MCP server.
 */
function syntheticRows(o: SyntheticRules, todo: { rs: string; mcp: string }): SyntheticRows {
  const rows: SyntheticRows = { clients: [], servers: [], mcp: [], rules: [] };
  for (let c = 0; c < o.clients; c++) {
    const id = `${o.prefix}-client-${c}`;
    rows.clients.push({ id, metadata: JSON.stringify({ client_name: id, grant_types: [TOKEN_EXCHANGE], response_types: [], redirect_uris: [] }) });
  }
  const servers: { id: string; mcp: string[] }[] = [];
  for (let s = 0; s < o.servers; s++) {
    const id = randomUUID();
    rows.servers.push({ id, issuer: `https://as-${s}.${o.prefix}.example`, name: `${o.prefix} AS ${s}` });
    const mcp = [0, 1, 2].map((m) => {
      const mid = randomUUID();
      rows.mcp.push({ id: mid, resource: `https://mcp-${m}.as-${s}.${o.prefix}.example/mcp`, name: `${o.prefix} MCP ${s}/${m}`, rs: id });
      return mid;
    });
    servers.push({ id, mcp });
  }
  const clients = rows.clients.map((c) => c.id);
  let n = 0;
  const rule = (client: string, rs: string, mcp: string | null) => {
    const [kind, subjects] = WHO[n % WHO.length]!;
    rows.rules.push({ id: `${o.prefix}-rule-${n}`, client, rs, mcp, kind, subjects, rsClientId: n % 2 ? `${client}-at-rs` : null });
    n++;
  };
  for (let d = 0; d < o.demoAgentRules && servers.length; d++) {
    const s = servers[d % servers.length]!;
    rule('demo-agent', s.id, s.mcp[Math.floor(d / servers.length) % 3]!);
  }
  for (const client of clients) {
    if (n >= o.rules) break;
    rule(client, todo.rs, todo.mcp);
  }
  for (let i = 0; n < o.rules; i++) {
    if (!clients.length || !servers.length) throw new Error('synthetic rules need synthetic clients and Resource ASes');
    const s = servers[Math.floor(i / clients.length) % servers.length]!;
    // every fourth rule covers the whole AS, the others one of its MCP servers
    rule(clients[i % clients.length]!, s.id, i % 4 === 0 ? null : s.mcp[i % 3]!);
  }
  return rows;
}

/**
 * Adds `rules` rules (see syntheticRows) to a SQLite file, in one transaction of prepared statements (fast
 * enough for 100,000). Returns the number of rows policy_rules holds afterwards.
 */
export function addSyntheticRules(sqlite: SQLite.Database, o: SyntheticRules): number {
  const at = now();
  const insertClient = sqlite.prepare(`insert into clients (client_id, metadata, secret_hash, first_party, disabled, created_at, updated_at)
    values (?, ?, null, 0, 0, ?, ?)`);
  const insertServer = sqlite.prepare('insert into resource_servers (id, issuer, name, enabled, created_at, updated_at) values (?, ?, ?, 1, ?, ?)');
  const insertMcp = sqlite.prepare(`insert into mcp_servers (id, resource, name, resource_server_id, scopes, enabled, created_at, updated_at)
    values (?, ?, ?, ?, ?, 1, ?, ?)`);
  const insertRule = sqlite.prepare(`insert into policy_rules (id, client_id, resource_server_id, mcp_server_id, subject_kind, subjects, scopes,
    default_scopes, rs_client_id, lifetime, max_auth_age, enabled, description, created_at, updated_at, created_by, updated_by)
    values (?, ?, ?, ?, ?, ?, ?, ?, ?, 300, null, 1, null, ?, ?, 'bench', 'bench')`);
  const todo = sqlite.prepare('select rs.id as rs, m.id as mcp from resource_servers rs join mcp_servers m on m.resource_server_id = rs.id where rs.issuer = ? and m.resource = ?')
    .get(TODO_AS, TODO_MCP) as { rs: string; mcp: string } | undefined;
  if (!todo) throw new Error('the seed\'s todo Resource AS is missing');
  const rows = syntheticRows(o, todo);
  sqlite.transaction(() => {
    for (const c of rows.clients) insertClient.run(c.id, c.metadata, at, at);
    for (const s of rows.servers) insertServer.run(s.id, s.issuer, s.name, at, at);
    for (const m of rows.mcp) insertMcp.run(m.id, m.resource, m.name, m.rs, SCOPES, at, at);
    for (const r of rows.rules) insertRule.run(r.id, r.client, r.rs, r.mcp, r.kind, r.subjects, SCOPES, '["data.read"]', r.rsClientId, at, at);
  })();
  return countRules(sqlite);
}

/**
 * The same rows through kysely, on any dialect (the PostgreSQL bench uses it for the few rules it needs):
 * one transaction, multi-row inserts in chunks. Returns the number of rows policy_rules holds afterwards.
 */
export async function addSyntheticRulesVia(db: DB, o: SyntheticRules): Promise<number> {
  const at = now();
  const todo = await db.selectFrom('resource_servers as rs').innerJoin('mcp_servers as m', 'm.resource_server_id', 'rs.id')
    .select(['rs.id as rs', 'm.id as mcp']).where('rs.issuer', '=', TODO_AS).where('m.resource', '=', TODO_MCP).executeTakeFirst();
  if (!todo) throw new Error('the seed\'s todo Resource AS is missing');
  const rows = syntheticRows(o, todo);
  const chunks = <T>(a: T[]) => Array.from({ length: Math.ceil(a.length / 500) }, (_, i) => a.slice(i * 500, (i + 1) * 500));
  await db.transaction().execute(async (tx) => {
    for (const part of chunks(rows.clients)) {
      await tx.insertInto('clients').values(part.map((c) => ({ client_id: c.id, metadata: c.metadata, secret_hash: null, first_party: 0, disabled: 0, created_at: at, updated_at: at }))).execute();
    }
    for (const part of chunks(rows.servers)) {
      await tx.insertInto('resource_servers').values(part.map((s) => ({ id: s.id, issuer: s.issuer, name: s.name, enabled: 1, created_at: at, updated_at: at, released_claims: '["email"]', aud_tenant: null, sub_id_format: null }))).execute();
    }
    for (const part of chunks(rows.mcp)) {
      await tx.insertInto('mcp_servers').values(part.map((m) => ({ id: m.id, resource: m.resource, name: m.name, resource_server_id: m.rs, scopes: SCOPES, enabled: 1, created_at: at, updated_at: at }))).execute();
    }
    for (const part of chunks(rows.rules)) {
      await tx.insertInto('policy_rules').values(part.map((r) => ({
        id: r.id, client_id: r.client, resource_server_id: r.rs, mcp_server_id: r.mcp, subject_kind: r.kind as SubjectKind, subjects: r.subjects, scopes: SCOPES,
        default_scopes: '["data.read"]', rs_client_id: r.rsClientId, lifetime: 300, max_auth_age: null, authorization_details_types: '[]', enabled: 1, description: null,
        created_at: at, updated_at: at, created_by: 'bench', updated_by: 'bench',
      }))).execute();
    }
  });
  const { n } = await db.selectFrom('policy_rules').select((eb) => eb.fn.countAll<number | string>().as('n')).executeTakeFirstOrThrow();
  return Number(n);
}

export function countRules(sqlite: SQLite.Database): number {
  return (sqlite.prepare('select count(*) as n from policy_rules').get() as { n: number }).n;
}

/** Removes a batch of synthetic rows (rules go with their clients and ASes, by cascade). */
export function removeSynthetic(sqlite: SQLite.Database, prefix: string): number {
  sqlite.transaction(() => {
    sqlite.prepare('delete from policy_rules where id like ?').run(`${prefix}-rule-%`);
    sqlite.prepare('delete from clients where client_id like ?').run(`${prefix}-client-%`);
    sqlite.prepare('delete from resource_servers where issuer like ?').run(`https://as-%.${prefix}.example`);
  })();
  return countRules(sqlite);
}

/** The rule lookup's query plan, to show it stays an index search at any table size. */
export function rulePlan(sqlite: SQLite.Database): string {
  const rows = sqlite.prepare('explain query plan select * from "policy_rules" where "client_id" = ? and "resource_server_id" = ?')
    .all('demo-agent', 'x') as { detail: string }[];
  return rows.map((r) => r.detail).join('; ');
}

/**
 * `count` users in the groups of `like` (alice by default, so the seed's rule admits them like her), for load
 * that looks like an enterprise's: many users behind one client id, each within the per-user token limit (300
 * a minute by default) that a single user hammering the endpoint would hit. Their subs, in order.
 */
export async function addBenchUsers(db: DB, count: number, like = 'alice'): Promise<string[]> {
  const model = await db.selectFrom('users').select('sub').where('username', '=', like).executeTakeFirstOrThrow();
  const groups = (await db.selectFrom('group_members').select('group_name').where('user_sub', '=', model.sub).execute()).map((g) => g.group_name);
  const at = now();
  const subs = Array.from({ length: count }, () => randomUUID());
  for (let i = 0; i < count; i += 200) {
    const batch = subs.slice(i, i + 200);
    await db.insertInto('users').values(batch.map((sub, j) => ({
      sub, username: `bench-${like}-${i + j}`, email: `bench-${like}-${i + j}@example.com`, email_verified: 1, name: `Bench user ${i + j} (like ${like})`,
      password_hash: null, disabled: 0, created_at: at, updated_at: at,
    }))).execute();
    const members = batch.flatMap((sub) => groups.map((group_name) => ({ group_name, user_sub: sub })));
    if (members.length) await db.insertInto('group_members').values(members).execute();
  }
  return subs;
}

/**
 * ID Tokens for `subs`: the claims of one the provider issued (`template`), with each sub, signed with the
 * IdP's own ID Token key as the provider signs them (same header, same claims, fresh iat and exp). Signing a
 * thousand users in through the browser flow would take minutes and measure the sign-in, not the exchange.
 */
export async function idTokensLike(db: DB, template: string, subs: string[]): Promise<string[]> {
  const header = decodeProtectedHeader(template);
  const claims = decodeJwt(template);
  const key = activeKey(await loadKeySet(db), 'id_token');
  const privateKey = await importJWK(key.privateJwk, key.alg);
  const iat = now();
  const lifetime = (claims.exp ?? iat + 3600) - (claims.iat ?? iat);
  return Promise.all(subs.map((sub) => new SignJWT({ ...claims, sub, iat, exp: iat + lifetime })
    .setProtectedHeader({ ...header, alg: key.alg, kid: key.kid }).sign(privateKey)));
}
