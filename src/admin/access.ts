import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { candidateRules, findResourceServer, toRelease, type McpServerRecord, type ResourceServerFacts } from '../db/catalog.ts';
import { now as nowSeconds, type DB } from '../db/index.ts';
import { findUserByName } from '../db/users.ts';
import { CheckList, ExchangeRejection, REQUEST_CHECKS } from '../exchange/checks.ts';
import { parseRequest, type RequestingClient } from '../exchange/request.ts';
import { decide, type Allow, type PolicyInput, type Rule } from '../policy/index.ts';
import { csvCell, Time } from './audit-query.ts';
import { invalid } from './errors.ts';
import { GroupName } from './fields.ts';
import { assumedClient, assumedRequest } from './simulate.ts';

/**
 * Effective access: who can reach what, through which client and rules, with which scopes, as the token endpoint
 * would decide it now (or at a chosen time). Every answer is the policy engine's (`decide` from src/policy, over
 * the candidate rules of each client and Resource AS, as the exchange reads them); nothing here re-implements a
 * rule. The checks before the policy are the pipeline's own too: a client that the request checks refuse
 * (disabled, public, not registered for token exchange), a disabled user, Resource AS or MCP server has no access.
 *
 * Scale: a decision depends on a user only through the groups the candidate rules name and whether a rule names
 * the user. Users are grouped by those facts per client and Resource AS (an equivalence class), the engine
 * decides once per class (a bounded cache), and the decision is expanded to every user of the class. Users are
 * read in username order, a chunk at a time, so a page stops reading once it is full and an export streams in
 * bounded memory, whatever the number of users.
 */

export const AccessQuery = z.strictObject({
  /** a Resource AS (issuer or alias): its audience-only requests and every one of its MCP servers */
  audience: z.string().min(1).max(2048).optional(),
  /** one MCP server */
  resource: z.string().min(1).max(2048).optional(),
  client_id: z.string().min(1).max(255).optional(),
  /** a username or a sub */
  user: z.string().min(1).max(255).optional(),
  /** members of this group only */
  group: GroupName.optional(),
  /** when: epoch milliseconds or ISO 8601 (time-bound rules); default now */
  at: Time.optional(),
});
export type AccessQuery = z.infer<typeof AccessQuery>;

export const AccessPage = AccessQuery.extend({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().max(4000).optional(),
});
export type AccessPage = z.infer<typeof AccessPage>;

export const AccessExport = AccessQuery.extend({ format: z.enum(['csv', 'jsonl']) });

/** One user's access to one target through one client. */
export interface AccessRow {
  username: string;
  sub: string;
  client_id: string;
  /** the Resource AS's issuer (the ID-JAG `aud`) */
  audience: string;
  /** the MCP server; null: an audience-only request (no `resource`) */
  resource: string | null;
  /** every scope this user can obtain here: each one the engine grants when asked for alone */
  scopes: string[];
  /** what a request without `scope` gets; empty when such a request is refused */
  default_scopes: string[];
  /** the rules that granted any of it */
  rule_ids: string[];
  /** the longest ID-JAG lifetime among those grants, in seconds */
  lifetime: number;
  /** the client's id at the Resource AS (the ID-JAG `client_id`) */
  rs_client_ids: string[];
  /** step-up: the strictest login age those rules require, in seconds; null when none does */
  max_auth_age: number | null;
  /** the earliest expiry among those rules (time-bound access); null when none expires */
  expires_at: string | null;
}

/** One client's candidate rules for one Resource AS, with the targets a request can name there. */
interface Slot {
  clientId: string;
  rs: ResourceServerFacts;
  rules: Rule[];
  /** undefined: an audience-only request; then the MCP servers in resource order */
  targets: (McpServerRecord | undefined)[];
  /** the facts of a user the rules can test: the groups they name and the users they name */
  groups: ReadonlySet<string>;
  subs: ReadonlySet<string>;
  /** the scopes to ask for one by one: an MCP server's own, or for an audience-only request every scope a rule names */
  audienceScopes: string[];
}

interface UserScan {
  /** one user (the `user` filter) */
  sub?: string;
  /** members of this group (the `group` filter) */
  group?: string;
  /** only users a rule names or who belong to a group a rule names: set when no one else can have access */
  namedOnly?: { groups: string[]; subs: string[] };
  /** nobody can have access (no slot, or the user filter names a disabled user) */
  nobody?: boolean;
}

export interface AccessPlan {
  /** epoch seconds: the instant decided */
  at: number;
  slots: Slot[];
  users: UserScan;
  /** why some clients, targets or users have no access whatever the rules say */
  notes: string[];
}

/** Rows are ordered by username, then client, Resource AS and MCP server (the audience-only request first). */
type RowKey = [username: string, clientId: string, audience: string, resource: string];
const keyOf = (r: AccessRow): RowKey => [r.username, r.client_id, r.audience, r.resource ?? ''];

const Cursor = z.object({ k: z.tuple([z.string(), z.string(), z.string(), z.string()]), t: z.number().int() });

/** The cursor of the page that starts just after `row`, decided at `at` (epoch seconds). */
export const cursorAfter = (row: AccessRow, at: number): string => encodeCursor(keyOf(row), at);

function encodeCursor(key: RowKey, at: number): string {
  return Buffer.from(JSON.stringify({ k: key, t: at })).toString('base64url');
}

function decodeCursor(cursor: string): { key: RowKey; at: number } {
  try {
    const parsed = Cursor.parse(JSON.parse(Buffer.from(cursor, 'base64url').toString()));
    return { key: parsed.k, at: parsed.t };
  } catch {
    throw invalid(['cursor'], 'not a cursor this API returned');
  }
}

const unique = <T>(list: Iterable<T>): T[] => [...new Set(list)];

/** Why the token endpoint's request checks would refuse this client anything (the pipeline's own checks), if they would. */
function clientRefusal(client: RequestingClient, audience: string): string | undefined {
  try {
    parseRequest(assumedRequest(client, audience, [], []), new CheckList(REQUEST_CHECKS));
    return undefined;
  } catch (err) {
    if (err instanceof ExchangeRejection) return err.explanation;
    throw err;
  }
}

async function resourceServersById(db: DB, ids: string[]): Promise<Map<string, ResourceServerFacts>> {
  if (!ids.length) return new Map();
  const rows = await db.selectFrom('resource_servers').select(['id', 'issuer', 'name', 'enabled', 'released_claims', 'aud_tenant', 'sub_id_format']).where('id', 'in', ids).execute();
  return new Map(rows.map((r) => [r.id, { id: r.id, issuer: r.issuer, name: r.name, enabled: Boolean(r.enabled), release: toRelease(r) }]));
}

async function mcpServersOf(db: DB, rsIds: string[]): Promise<McpServerRecord[]> {
  if (!rsIds.length) return [];
  const rows = await db.selectFrom('mcp_servers').select(['id', 'resource', 'resource_server_id', 'scopes', 'enabled'])
    .where('resource_server_id', 'in', rsIds).orderBy('resource').execute();
  return rows.map((r) => ({ id: r.id, resource: r.resource, resourceServerId: r.resource_server_id, scopes: JSON.parse(r.scopes) as string[], enabled: Boolean(r.enabled) }));
}

/** What the query asks about, checked against what is stored: every name it uses must exist. */
async function resolveFilters(db: DB, q: AccessQuery) {
  const rs = q.audience === undefined ? undefined : await findResourceServer(db, q.audience);
  if (q.audience !== undefined && !rs) throw invalid(['audience'], `unknown Resource AS ${q.audience}`);
  let mcp: McpServerRecord | undefined;
  if (q.resource !== undefined) {
    const row = await db.selectFrom('mcp_servers').select(['id', 'resource', 'resource_server_id', 'scopes', 'enabled']).where('resource', '=', q.resource).executeTakeFirst();
    if (!row) throw invalid(['resource'], `unknown MCP server ${q.resource}`);
    if (rs && row.resource_server_id !== rs.id) throw invalid(['resource'], `${q.resource} is not an MCP server of ${rs.issuer}`);
    mcp = { id: row.id, resource: row.resource, resourceServerId: row.resource_server_id, scopes: JSON.parse(row.scopes) as string[], enabled: Boolean(row.enabled) };
  }
  if (q.client_id !== undefined && !(await db.selectFrom('clients').select('client_id').where('client_id', '=', q.client_id).executeTakeFirst())) {
    throw invalid(['client_id'], `unknown client ${q.client_id}`);
  }
  const user = q.user === undefined ? undefined : await findUserByName(db, q.user);
  if (q.user !== undefined && !user) throw invalid(['user'], `unknown user ${q.user}`);
  if (q.group !== undefined && !(await db.selectFrom('groups').select('name').where('name', '=', q.group).executeTakeFirst())) {
    throw invalid(['group'], `unknown group ${q.group}`);
  }
  return { rsId: mcp?.resourceServerId ?? rs?.id, mcp, user };
}

/** Whether anyone the rules neither name nor reach through a group could get a grant in this slot. */
function outsidersAllowed(slot: Slot, at: number): boolean {
  let sub = randomUUID();
  while (slot.subs.has(sub)) sub = randomUUID();
  return probe(slot, { sub, groups: [] }, at).length > 0;
}

/** Plans a query: the slots (client × Resource AS) it covers, their targets, and which users to read. */
export async function planAccess(db: DB, q: AccessQuery, atSeconds?: number): Promise<AccessPlan> {
  const at = atSeconds ?? (q.at === undefined ? nowSeconds() : Math.floor(q.at / 1000));
  const { rsId, mcp, user } = await resolveFilters(db, q);
  const notes: string[] = [];

  const rules = await candidateRules(db, { clientId: q.client_id, resourceServerId: rsId });
  const byPair = new Map<string, Rule[]>();
  for (const r of rules) byPair.set(`${r.clientId}\n${r.resourceServerId}`, [...(byPair.get(`${r.clientId}\n${r.resourceServerId}`) ?? []), r]);
  const rsIds = unique(rules.map((r) => r.resourceServerId));
  const servers = await resourceServersById(db, rsIds);
  const mcps = await mcpServersOf(db, rsIds);
  const clientIds = unique(rules.map((r) => r.clientId));
  const clients = new Map(clientIds.length
    ? (await db.selectFrom('clients').select(['client_id', 'metadata', 'secret_hash', 'first_party', 'disabled']).where('client_id', 'in', clientIds).execute())
      .map((c) => [c.client_id, assumedClient(c)] as const)
    : []);

  const refused = new Map<string, string | undefined>();
  const slots: Slot[] = [];
  for (const pairRules of byPair.values()) {
    const { clientId, resourceServerId } = pairRules[0]!;
    const rs = servers.get(resourceServerId)!;
    const client = clients.get(clientId)!;
    if (!refused.has(clientId)) {
      const why = clientRefusal(client, rs.issuer);
      refused.set(clientId, why);
      if (why) notes.push(`client ${clientId} has no access: ${why}`);
    }
    if (refused.get(clientId)) continue;
    if (!rs.enabled) {
      if (!notes.some((n) => n.startsWith(`Resource AS ${rs.issuer} `))) notes.push(`Resource AS ${rs.issuer} is disabled: nobody can reach it`);
      continue;
    }
    const own = mcps.filter((m) => m.resourceServerId === rs.id && (mcp === undefined || m.id === mcp.id));
    for (const m of own.filter((x) => !x.enabled)) {
      if (!notes.some((n) => n.startsWith(`MCP server ${m.resource} `))) notes.push(`MCP server ${m.resource} is disabled: nobody can reach it`);
    }
    const targets = [...(mcp === undefined ? [undefined] : []), ...own.filter((x) => x.enabled)];
    if (!targets.length) continue;
    slots.push({
      clientId,
      rs,
      rules: pairRules,
      targets,
      groups: new Set(pairRules.flatMap((r) => (r.subjects.kind === 'groups' ? r.subjects.groups : []))),
      subs: new Set(pairRules.flatMap((r) => (r.subjects.kind === 'users' ? r.subjects.subs : []))),
      audienceScopes: unique(pairRules.flatMap((r) => r.scopes)).sort(),
    });
  }
  slots.sort((a, b) => (a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : a.rs.issuer < b.rs.issuer ? -1 : a.rs.issuer > b.rs.issuer ? 1 : 0));

  const users: UserScan = {};
  if (user) {
    users.sub = user.sub;
    if (user.disabled) {
      notes.push(`user ${user.username} is disabled: no access`);
      users.nobody = true;
    }
  }
  if (q.group !== undefined) users.group = q.group;
  if (slots.length === 0) users.nobody = true;
  else if (!slots.some((s) => outsidersAllowed(s, at))) {
    const named = { groups: unique(slots.flatMap((s) => [...s.groups])), subs: unique(slots.flatMap((s) => [...s.subs])) };
    // a narrower read is only an optimisation: with very many names, reading every user costs less than the list
    if (named.groups.length + named.subs.length <= NAMED_MAX) users.namedOnly = named;
  }
  return { at, slots, users, notes };
}

/** The facts of `user` that `slot`'s rules can test, and the key of their class. */
function project(sub: string, groups: readonly string[], slot: Slot): { key: string; facts: PolicyInput['user'] } {
  const relevant = groups.filter((g) => slot.groups.has(g)).sort();
  const named = slot.subs.has(sub);
  // a sub no rule names cannot change a decision: such users share their class whatever their sub
  return { key: `${named ? sub : ''}\n${relevant.join('\n')}`, facts: { sub, groups: relevant } };
}

type Grant = Omit<AccessRow, 'username' | 'sub' | 'client_id' | 'audience'>;

/**
 * The engine's decisions for one class in one slot, for each target: a request without `scope`, then each
 * scope asked for alone (anything granted in a larger request is granted alone too). The login is taken as
 * fresh (step-up rules are reported, not refused); the rest is what the token endpoint decides.
 */
function probe(slot: Slot, user: PolicyInput['user'], at: number): Grant[] {
  const grants: Grant[] = [];
  const byId = new Map(slot.rules.map((r) => [r.id, r]));
  for (const target of slot.targets) {
    const base: PolicyInput = { client: { id: slot.clientId }, user, resourceServer: { id: slot.rs.id }, mcpServers: target ? [target] : [], authTime: at, now: at };
    const plain = decide(base, slot.rules);
    const asked = (target ? target.scopes : slot.audienceScopes).map((s) => decide({ ...base, requestedScopes: [s] }, slot.rules));
    const allowed = [plain, ...asked].filter((d): d is Allow => d.allow);
    if (!allowed.length) continue;
    const ruleIds = unique(allowed.flatMap((d) => d.ruleIds)).sort();
    const rules = ruleIds.map((id) => byId.get(id)!);
    const ages = rules.map((r) => r.maxAuthAge).filter((a): a is number => a !== null);
    const expiries = rules.map((r) => r.expiresAt).filter((e): e is number => e !== null);
    grants.push({
      resource: target?.resource ?? null,
      scopes: unique(allowed.flatMap((d) => d.scopes)).sort(),
      default_scopes: plain.allow ? plain.scopes : [],
      rule_ids: ruleIds,
      lifetime: Math.max(...allowed.map((d) => d.lifetime)),
      rs_client_ids: unique(allowed.map((d) => d.rsClientId)).sort(),
      max_auth_age: ages.length ? Math.min(...ages) : null,
      expires_at: expiries.length ? new Date(Math.min(...expiries) * 1000).toISOString() : null,
    });
  }
  return grants;
}

const USER_CHUNK = 500;
/** the most group names and subs a user read is narrowed to (each is a query parameter) */
const NAMED_MAX = 1000;
/** classes remembered across the users of one query; beyond, the oldest are decided again when they come back */
const CLASS_CACHE = 50_000;

/** Users to consider, in username order, a chunk at a time, from `from` (inclusive) on. */
async function* userChunks(db: DB, scan: UserScan, from: string | undefined): AsyncGenerator<{ sub: string; username: string }[]> {
  if (scan.nobody) return;
  let after = from;
  let inclusive = true;
  for (;;) {
    let q = db.selectFrom('users').select(['sub', 'username']).where('disabled', '=', 0);
    if (scan.sub !== undefined) q = q.where('sub', '=', scan.sub);
    if (scan.group !== undefined) {
      const group = scan.group;
      q = q.where('sub', 'in', (eb) => eb.selectFrom('group_members').select('user_sub').where('group_name', '=', group));
    }
    if (scan.namedOnly) {
      const { groups, subs } = scan.namedOnly;
      if (!groups.length && !subs.length) return;
      q = q.where((eb) => eb.or([
        ...(groups.length ? [eb('sub', 'in', eb.selectFrom('group_members').select('user_sub').where('group_name', 'in', groups))] : []),
        ...(subs.length ? [eb('sub', 'in', subs)] : []),
      ]));
    }
    if (after !== undefined) q = q.where('username', inclusive ? '>=' : '>', after);
    const rows = await q.orderBy('username').limit(USER_CHUNK).execute();
    if (rows.length) yield rows;
    if (rows.length < USER_CHUNK) return;
    after = rows.at(-1)!.username;
    inclusive = false;
  }
}

async function groupsOfUsers(db: DB, subs: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (!subs.length) return out;
  for (const m of await db.selectFrom('group_members').select(['user_sub', 'group_name']).where('user_sub', 'in', subs).execute()) {
    const list = out.get(m.user_sub);
    if (list) list.push(m.group_name);
    else out.set(m.user_sub, [m.group_name]);
  }
  return out;
}

const after = (a: RowKey, b: RowKey): boolean => {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! > b[i]!;
  return false;
};

/** Every row of a plan, in order, from just after `from` on: what a page reads the start of and an export reads whole. */
export async function* accessRows(db: DB, plan: AccessPlan, from?: RowKey): AsyncGenerator<AccessRow> {
  const classes = new LRUCache<string, Grant[]>({ max: CLASS_CACHE });
  for await (const chunk of userChunks(db, plan.users, from?.[0])) {
    const groups = await groupsOfUsers(db, chunk.map((u) => u.sub));
    for (const u of chunk) {
      for (const [i, slot] of plan.slots.entries()) {
        const { key, facts } = project(u.sub, groups.get(u.sub) ?? [], slot);
        let grants = classes.get(`${i}\n${key}`);
        if (grants === undefined) {
          grants = probe(slot, facts, plan.at);
          classes.set(`${i}\n${key}`, grants);
        }
        for (const g of grants) {
          const row: AccessRow = { username: u.username, sub: u.sub, client_id: slot.clientId, audience: slot.rs.issuer, ...g };
          if (from && u.username === from[0] && !after(keyOf(row), from)) continue;
          yield row;
        }
      }
    }
  }
}

export interface AccessPageResult {
  items: AccessRow[];
  next_cursor: string | null;
  /** the instant decided */
  at: string;
  notes: string[];
}

/** One page; its cursor carries the instant, so later pages decide at the same one. */
export async function accessPage(db: DB, p: AccessPage): Promise<AccessPageResult> {
  const cursor = p.cursor === undefined ? undefined : decodeCursor(p.cursor);
  const plan = await planAccess(db, p, cursor?.at);
  const items: AccessRow[] = [];
  for await (const row of accessRows(db, plan, cursor?.key)) {
    items.push(row);
    if (items.length > p.limit) break;
  }
  const page = items.slice(0, p.limit);
  return {
    items: page,
    next_cursor: items.length > p.limit ? encodeCursor(keyOf(page.at(-1)!), plan.at) : null,
    at: new Date(plan.at * 1000).toISOString(),
    notes: plan.notes,
  };
}

export const ACCESS_CSV_COLUMNS = ['username', 'sub', 'client_id', 'audience', 'resource', 'scopes', 'default_scopes', 'rule_ids', 'lifetime',
  'rs_client_ids', 'max_auth_age', 'expires_at'] as const;

export function accessCsvLine(r: AccessRow): string {
  const cells: Record<(typeof ACCESS_CSV_COLUMNS)[number], unknown> = {
    ...r,
    scopes: r.scopes.join(' '),
    default_scopes: r.default_scopes.join(' '),
    rule_ids: r.rule_ids.join(' '),
    rs_client_ids: r.rs_client_ids.join(' '),
  };
  return `${ACCESS_CSV_COLUMNS.map((c) => csvCell(cells[c])).join(',')}\r\n`;
}

const EXPORT_CHUNK = 1000;

/** The whole answer as text chunks, for a streamed HTTP body: the plan is made (and any bad filter refused) before the first chunk. */
export async function exportAccess(db: DB, q: AccessQuery, format: 'csv' | 'jsonl'): Promise<AsyncGenerator<string>> {
  const plan = await planAccess(db, q);
  return (async function* chunks() {
    if (format === 'csv') yield `${ACCESS_CSV_COLUMNS.join(',')}\r\n`;
    let chunk = '';
    let n = 0;
    for await (const row of accessRows(db, plan)) {
      chunk += format === 'csv' ? accessCsvLine(row) : `${JSON.stringify(row)}\n`;
      if (++n % EXPORT_CHUNK === 0) {
        yield chunk;
        chunk = '';
      }
    }
    if (chunk) yield chunk;
  })();
}
