/**
 * Effective access at scale: a scratch SQLite database with the real schema, 100,000 users in 100 groups (each in
 * one to three), 50 clients, 20 Resource ASes with 5 MCP servers each, and 1,000 rules, 16 of them on the target
 * measured (group rules of ten clients, an everyone rule, a rule naming 100 users, a rule for its whole AS, a
 * disabled and an expired one). Then what the admin API runs (src/admin/access.ts): the target's first page, a
 * page half-way down (through its cursor), one user's page (every rule), one client's first page, and the
 * target's whole CSV export, streamed, with the heap sampled as it goes; and two sparse targets (a hundred named
 * users; only a disabled rule), whose pages read the members of the groups the rules name rather than everyone. Pages are the mean of several runs after
 * the first (reported apart: it reads pages not yet cached).
 *
 * Run with --expose-gc to see the heap the export holds on to. Prints one JSON line; progress on stderr. The database lives in a temporary directory, removed at the end.
 *
 *   node test/bench/access.ts [--users 100000] [--runs 10]
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type SQLite from 'better-sqlite3';
import { accessPage, AccessPage, accessRows, cursorAfter, exportAccess, planAccess, type AccessQuery } from '../../src/admin/access.ts';
import { migrateToLatest, now, type DB } from '../../src/db/index.ts';
import { openSqlite } from './fixtures.ts';
import { TOKEN_EXCHANGE } from '../helpers/exchange.ts';

const GROUPS = 100;
const CLIENTS = 50;
const SERVERS = 20;
const MCP_PER_SERVER = 5;
const RULES = 1000;
const SCOPES = ['data.read', 'data.write', 'data.admin'];
export const ACCESS_TARGET = 'https://mcp-0.as-0.access.example/mcp';
const SPARSE_NONE = `https://mcp-0.as-${SERVERS - 1}.access.example/mcp`;
const SPARSE_USERS = `https://mcp-1.as-${SERVERS - 1}.access.example/mcp`;

/** A small deterministic generator (mulberry32): the same database every run. */
function random(seed: number) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/** Fills the catalog, users, memberships and rules in one transaction of prepared statements. Returns the ms. */
export function fillAccessDatabase(sqlite: SQLite.Database, users: number): number {
  sqlite.pragma('journal_mode = OFF');
  sqlite.pragma('synchronous = OFF');
  const rnd = random(17);
  const pick = <T>(list: T[]) => list[Math.floor(rnd() * list.length)]!;
  const at = now();
  const groups = Array.from({ length: GROUPS }, (_, i) => `g${pad(i, 3)}`);
  const clients = Array.from({ length: CLIENTS }, (_, i) => `client-${pad(i, 2)}`);
  const servers = Array.from({ length: SERVERS }, (_, s) => ({ id: `rs-${s}`, issuer: `https://as-${s}.access.example`, mcp: Array.from({ length: MCP_PER_SERVER }, (_, m) => ({ id: `mcp-${s}-${m}`, resource: `https://mcp-${m}.as-${s}.access.example/mcp` })) }));
  const subs = (n: number) => Array.from({ length: n }, () => `sub-${pad(Math.floor(rnd() * users), 6)}`);
  const t = performance.now();
  const insert = {
    group: sqlite.prepare('insert into groups (name, description, created_at) values (?, null, ?)'),
    user: sqlite.prepare('insert into users (sub, username, email, email_verified, name, password_hash, disabled, created_at, updated_at) values (?, ?, null, 0, null, null, ?, ?, ?)'),
    member: sqlite.prepare('insert or ignore into group_members (group_name, user_sub) values (?, ?)'),
    client: sqlite.prepare('insert into clients (client_id, metadata, secret_hash, first_party, disabled, created_at, updated_at) values (?, ?, null, 0, 0, ?, ?)'),
    server: sqlite.prepare('insert into resource_servers (id, issuer, name, enabled, created_at, updated_at) values (?, ?, ?, 1, ?, ?)'),
    mcp: sqlite.prepare('insert into mcp_servers (id, resource, name, resource_server_id, scopes, enabled, created_at, updated_at) values (?, ?, ?, ?, ?, 1, ?, ?)'),
    rule: sqlite.prepare(`insert into policy_rules (id, client_id, resource_server_id, mcp_server_id, subject_kind, subjects, scopes, default_scopes, rs_client_id,
      lifetime, max_auth_age, enabled, description, not_before, expires_at, created_at, updated_at, created_by, updated_by)
      values (?, ?, ?, ?, ?, ?, ?, ?, null, 300, null, ?, null, null, ?, ?, ?, 'bench', 'bench')`),
  };
  const metadata = JSON.stringify({ token_endpoint_auth_method: 'client_secret_basic', grant_types: [TOKEN_EXCHANGE], response_types: [], redirect_uris: [] });
  let n = 0;
  const rule = (client: string, rs: string, mcp: string | null, kind: string, subjects: string[], scopes: string[], opts: { enabled?: boolean; expiresAt?: number } = {}) => {
    insert.rule.run(`rule-${pad(n++, 4)}`, client, rs, mcp, kind, JSON.stringify(subjects), JSON.stringify(scopes), JSON.stringify(scopes.slice(0, 1)),
      opts.enabled === false ? 0 : 1, opts.expiresAt ?? null, at, at);
  };
  const someGroups = (max: number) => [...new Set(Array.from({ length: 1 + Math.floor(rnd() * max) }, () => pick(groups)))];
  const someScopes = () => SCOPES.slice(0, 1 + Math.floor(rnd() * SCOPES.length));
  sqlite.transaction(() => {
    for (const g of groups) insert.group.run(g, at);
    for (let i = 0; i < users; i++) {
      const sub = `sub-${pad(i, 6)}`;
      // one in a thousand is disabled
      insert.user.run(sub, `user-${pad(i, 6)}`, i % 1000 === 999 ? 1 : 0, at, at);
      for (let k = 0; k <= i % 3; k++) insert.member.run(pick(groups), sub);
    }
    for (const c of clients) insert.client.run(c, metadata, at, at);
    for (const s of servers) {
      insert.server.run(s.id, s.issuer, s.issuer, at, at);
      for (const m of s.mcp) insert.mcp.run(m.id, m.resource, m.resource, s.id, JSON.stringify(SCOPES), at, at);
    }
    // the target: rs-0's first MCP server (and the rest of rs-0 through the AS-wide rule)
    const target = servers[0]!;
    for (let c = 0; c < 10; c++) rule(clients[c]!, target.id, target.mcp[0]!.id, 'groups', someGroups(3), someScopes());
    rule(clients[10]!, target.id, target.mcp[0]!.id, 'everyone', [], ['data.read']);
    rule(clients[11]!, target.id, target.mcp[0]!.id, 'users', subs(100), SCOPES);
    rule(clients[12]!, target.id, null, 'groups', someGroups(2), ['data.read', 'data.write']);
    rule(clients[13]!, target.id, target.mcp[0]!.id, 'groups', someGroups(3), SCOPES, { enabled: false });
    rule(clients[14]!, target.id, target.mcp[0]!.id, 'groups', someGroups(3), SCOPES, { expiresAt: at - 3600 });
    rule(clients[0]!, target.id, target.mcp[0]!.id, 'users', subs(5), ['data.admin']);
    // two sparse targets on the last AS: one only a disabled rule names (nobody has access), one only 100 named users reach
    const sparse = servers[SERVERS - 1]!;
    rule(clients[15]!, sparse.id, sparse.mcp[0]!.id, 'groups', someGroups(3), SCOPES, { enabled: false });
    rule(clients[16]!, sparse.id, sparse.mcp[1]!.id, 'users', subs(100), SCOPES);
    // the rest, anywhere else, mostly groups, a few for everyone or named users
    while (n < RULES) {
      const s = servers[1 + Math.floor(rnd() * (SERVERS - 2))]!;
      const r = rnd();
      const [kind, subjects] = r < 0.8 ? ['groups', someGroups(4)] : r < 0.9 ? ['users', subs(20)] : ['everyone', []];
      rule(pick(clients), s.id, rnd() < 0.2 ? null : pick(s.mcp).id, kind as string, subjects as string[], someScopes());
    }
  })();
  return performance.now() - t;
}

interface Timing { firstRunMs: number; meanMs: number; maxMs: number; rows: number }

async function timePage(db: DB, p: AccessPage, runs: number): Promise<Timing> {
  const times: number[] = [];
  let rows = 0;
  for (let i = 0; i <= runs; i++) {
    const t = performance.now();
    const page = await accessPage(db, p);
    times.push(performance.now() - t);
    rows = page.items.length;
  }
  const rest = times.slice(1);
  const round = (x: number) => Math.round(x * 100) / 100;
  return { firstRunMs: round(times[0]!), meanMs: round(rest.reduce((a, b) => a + b, 0) / rest.length), maxMs: round(Math.max(...rest)), rows };
}

export interface AccessScaleResult {
  users: number;
  groups: number;
  rules: number;
  runs: number;
  fillMs: number;
  databaseMiB: number;
  target: string;
  pages: { name: string; timing: Timing }[];
  /** heapMaxMiB: the largest heap seen (garbage included); heapLiveMaxMiB: the largest after a full collection (null without --expose-gc) */
  export: { rows: number; bytes: number; seconds: number; rowsPerSecond: number; heapBeforeMiB: number; heapMaxMiB: number; heapLiveMaxMiB: number | null; rssMaxMiB: number };
}

export async function accessScale(users: number, runs: number, progress: (s: string) => void = () => {}): Promise<AccessScaleResult> {
  const dir = mkdtempSync(join(tmpdir(), 'idjag-bench-access-'));
  const file = join(dir, 'access.db');
  const database = openSqlite(file);
  try {
    const { db, sqlite } = database;
    await migrateToLatest(db);
    progress(`${users.toLocaleString('en-US')} users, ${GROUPS} groups, ${RULES.toLocaleString('en-US')} rules ...`);
    const fillMs = fillAccessDatabase(sqlite, users);
    sqlite.pragma('optimize');
    progress(` ${(fillMs / 1000).toFixed(1)} s; timing ...`);
    const target: AccessQuery = { resource: ACCESS_TARGET };

    // the export first: it also finds the row half-way down, whose cursor the deep page starts from
    const heap = () => process.memoryUsage();
    global.gc?.();
    const heapBefore = heap().heapUsed;
    let heapMax = heapBefore;
    let rssMax = heap().rss;
    let bytes = 0;
    let rows = 0;
    const started = performance.now();
    let chunks = 0;
    let liveMax = heapBefore;
    for await (const chunk of await exportAccess(db, target, 'csv')) {
      bytes += Buffer.byteLength(chunk);
      rows += chunk.split('\r\n').length - 1;
      const m = heap();
      heapMax = Math.max(heapMax, m.heapUsed);
      rssMax = Math.max(rssMax, m.rss);
      // what the export holds on to: the heap after a full collection, now and then (with --expose-gc)
      if (global.gc && ++chunks % 25 === 0) {
        global.gc();
        liveMax = Math.max(liveMax, heap().heapUsed);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    rows -= 1; // the header
    const plan = await planAccess(db, target);
    let middle: Awaited<ReturnType<AsyncGenerator['next']>>['value'];
    let i = 0;
    for await (const row of accessRows(db, plan)) {
      if (i++ === Math.floor(rows / 2)) {
        middle = row;
        break;
      }
    }
    const pages = [
      { name: 'MCP server, first page', timing: await timePage(db, AccessPage.parse({ ...target, limit: 50 }), runs) },
      { name: 'MCP server, page half-way', timing: await timePage(db, AccessPage.parse({ ...target, limit: 50, cursor: cursorAfter(middle, plan.at) }), runs) },
      { name: 'one user (every rule)', timing: await timePage(db, AccessPage.parse({ user: `user-${pad(Math.floor(users / 2), 6)}`, limit: 50 }), runs) },
      { name: 'one client, first page', timing: await timePage(db, AccessPage.parse({ client_id: 'client-03', limit: 50 }), runs) },
      { name: 'Resource AS, first page', timing: await timePage(db, AccessPage.parse({ audience: 'https://as-0.access.example', limit: 50 }), runs) },
      { name: 'MCP server 100 named users reach', timing: await timePage(db, AccessPage.parse({ resource: SPARSE_USERS, limit: 50 }), runs) },
      { name: 'MCP server only a disabled rule names', timing: await timePage(db, AccessPage.parse({ resource: SPARSE_NONE, limit: 50 }), runs) },
    ];
    const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
    return {
      users, groups: GROUPS, rules: RULES, runs, fillMs, databaseMiB: Math.round(statSync(file).size / 2 ** 20), target: ACCESS_TARGET, pages,
      export: { rows, bytes, seconds: Math.round(seconds * 100) / 100, rowsPerSecond: Math.round(rows / seconds), heapBeforeMiB: mib(heapBefore), heapMaxMiB: mib(heapMax), heapLiveMaxMiB: global.gc ? mib(liveMax) : null, rssMaxMiB: mib(rssMax) },
    };
  } finally {
    await database.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { users: { type: 'string', default: '100000' }, runs: { type: 'string', default: '10' } }, strict: true });
  const users = Number(values.users);
  const runs = Number(values.runs);
  if (!Number.isInteger(users) || users < 1000 || !Number.isInteger(runs) || runs < 1) {
    console.error('usage: access.ts [--users n ≥ 1000] [--runs n ≥ 1]');
    process.exit(2);
  }
  const result = await accessScale(users, runs, (s) => process.stderr.write(s));
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
