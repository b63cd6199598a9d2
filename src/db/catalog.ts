import type { McpServerFacts, Rule, Subjects } from '../policy/index.ts';
import { sql, type Expression, type Kysely } from 'kysely';
import type { DB, Schema } from './index.ts';
import { prepared, type Param } from './prepared.ts';
import { memberOf, memberQuery, type Member, type MemberRow } from './users.ts';
import type { McpServersTable, PolicyRulesTable, ResourceServersTable } from './schema.ts';

/** The identity claims an admin may release to a Resource AS, with the OpenID Connect meaning of each. */
export const RELEASABLE_CLAIMS = ['email', 'email_verified', 'name', 'preferred_username', 'groups'] as const;
export type ReleasableClaim = (typeof RELEASABLE_CLAIMS)[number];

/**
 * `sub_id` (RFC 9493 subject identifiers), when a Resource AS wants one:
 * - `email`: `{ format: "email", email }`, the user's email (omitted when they have none);
 * - `iss_sub`: `{ format: "iss_sub", iss, sub }`, this IdP's issuer and the user's `sub`;
 * - `opaque`: `{ format: "opaque", id }`, the user's `aud_sub` at this Resource AS (omitted when none is mapped).
 */
export const SUB_ID_FORMATS = ['email', 'iss_sub', 'opaque'] as const;
export type SubIdFormat = (typeof SUB_ID_FORMATS)[number];

/** What one Resource AS receives about a user (stored with the Resource AS; the exchange applies it, src/exchange/release.ts). */
export interface ClaimRelease {
  claims: ReleasableClaim[];
  /** the ID-JAG `aud_tenant`: the Resource AS's tenant the user belongs to */
  audTenant: string | null;
  subIdFormat: SubIdFormat | null;
}

export const NO_RELEASE: ClaimRelease = { claims: [], audTenant: null, subIdFormat: null };


/**
 * The catalog as the token exchange and the admin read it: Resource ASes (by issuer or alias), their MCP
 * servers (by resource identifier), and the policy rules of one client for one Resource AS. The exchange's
 * lookups are prepared once: they run on every token request.
 */

export interface ResourceServerFacts {
  id: string;
  issuer: string;
  name: string;
  enabled: boolean;
  /** what its ID-JAGs say about the user */
  release: ClaimRelease;
}

export interface McpServerRecord extends McpServerFacts {
  resourceServerId: string;
}

type ResourceServerRow = Pick<ResourceServersTable, 'id' | 'issuer' | 'name' | 'enabled' | 'released_claims' | 'aud_tenant' | 'sub_id_format'>;
const RS_COLUMNS = ['id', 'issuer', 'name', 'enabled', 'released_claims', 'aud_tenant', 'sub_id_format'] as const;

const resourceServerByAudience = prepared<Schema, { audience: string }, ResourceServerRow>((db, p) =>
  db.selectFrom('resource_servers').select(RS_COLUMNS)
    .where((eb) => eb.or([
      eb('issuer', '=', p('audience')),
      eb('id', '=', eb.selectFrom('resource_server_aliases').select('resource_server_id').where('alias', '=', p('audience'))),
    ])));

const RELEASABLE = new Set<string>(RELEASABLE_CLAIMS);
const FORMATS = new Set<string>(SUB_ID_FORMATS);

/** A stored release as the exchange reads it; anything not a known claim or format (a hand-edited row) releases nothing. */
export function toRelease(row: Pick<ResourceServersTable, 'released_claims' | 'aud_tenant' | 'sub_id_format'>): ClaimRelease {
  let claims: unknown;
  try {
    claims = JSON.parse(row.released_claims);
  } catch {
    claims = [];
  }
  return {
    claims: Array.isArray(claims) ? claims.filter((c): c is ReleasableClaim => typeof c === 'string' && RELEASABLE.has(c)) : [],
    audTenant: row.aud_tenant,
    subIdFormat: row.sub_id_format !== null && FORMATS.has(row.sub_id_format) ? row.sub_id_format as SubIdFormat : null,
  };
}

/** The Resource AS an audience names: its issuer identifier, or one of its aliases. */
export async function findResourceServer(db: DB, audience: string): Promise<ResourceServerFacts | undefined> {
  const row = (await resourceServerByAudience(db, { audience }))[0];
  return row && { id: row.id, issuer: row.issuer, name: row.name, enabled: Boolean(row.enabled), release: toRelease(row) };
}

// Once per issued ID-JAG: prepared once.
const audSubByUser = prepared<Schema, { resourceServerId: string; sub: string }, { aud_sub: string }>((db, p) =>
  db.selectFrom('audience_subjects').select('aud_sub').where('resource_server_id', '=', p('resourceServerId')).where('user_sub', '=', p('sub')));

/** The subject identifier the Resource AS knows this user by (the ID-JAG `aud_sub`), when an admin mapped one. */
export async function findAudienceSubject(db: DB, resourceServerId: string, sub: string): Promise<string | undefined> {
  return (await audSubByUser(db, { resourceServerId, sub }))[0]?.aud_sub;
}

type McpRow = Pick<McpServersTable, 'id' | 'resource' | 'resource_server_id' | 'scopes' | 'enabled'>;
const MCP_COLUMNS = ['id', 'resource', 'resource_server_id', 'scopes', 'enabled'] as const;
// One resource is the common case (the MCP profile sends exactly one): that query is prepared once.
const mcpServerByResource = prepared<Schema, { resource: string }, McpRow>((db, p) =>
  db.selectFrom('mcp_servers').select(MCP_COLUMNS).where('resource', '=', p('resource')));

/** The MCP servers with these resource identifiers (those that exist). */
export async function findMcpServers(db: DB, resources: readonly string[]): Promise<McpServerRecord[]> {
  if (resources.length === 0) return [];
  const rows: McpRow[] = resources.length === 1
    ? await mcpServerByResource(db, { resource: resources[0]! })
    : await db.selectFrom('mcp_servers').select(MCP_COLUMNS).where('resource', 'in', [...resources]).execute();
  return rows.map(toMcpServer);
}

const toMcpServer = (r: McpRow): McpServerRecord =>
  ({ id: r.id, resource: r.resource, resourceServerId: r.resource_server_id, scopes: JSON.parse(r.scopes) as string[], enabled: Boolean(r.enabled) });

/** A stored rule as the policy engine reads it. */
export function toRule(row: PolicyRulesTable): Rule {
  const list = JSON.parse(row.subjects) as string[];
  const subjects: Subjects = row.subject_kind === 'groups' ? { kind: 'groups', groups: list }
    : row.subject_kind === 'users' ? { kind: 'users', subs: list } : { kind: 'everyone' };
  return {
    id: row.id,
    clientId: row.client_id,
    resourceServerId: row.resource_server_id,
    mcpServerId: row.mcp_server_id,
    subjects,
    scopes: JSON.parse(row.scopes) as string[],
    defaultScopes: JSON.parse(row.default_scopes) as string[],
    rsClientId: row.rs_client_id,
    lifetime: row.lifetime,
    maxAuthAge: row.max_auth_age,
    enabled: Boolean(row.enabled),
    notBefore: row.not_before,
    expiresAt: row.expires_at,
    authorizationDetailsTypes: JSON.parse(row.authorization_details_types) as string[],
  };
}

const rulesByClientTarget = prepared<Schema, { clientId: string; resourceServerId: string }, PolicyRulesTable>((db, p) =>
  db.selectFrom('policy_rules').selectAll()
    .where('client_id', '=', p('clientId')).where('resource_server_id', '=', p('resourceServerId')));

/**
 * The candidate rules: every rule of this client for this Resource AS (disabled ones too, so the decision can
 * say why). One indexed lookup on (client_id, resource_server_id), whatever the size of the table.
 */
export async function rulesFor(db: DB, clientId: string, resourceServerId: string): Promise<Rule[]> {
  return (await rulesByClientTarget(db, { clientId, resourceServerId })).map(toRule);
}

/** Every column of a rule, as the combined lookup below reads them (prefixed `r_`, beside the Resource AS's). */
const RULE_COLUMNS = ['id', 'client_id', 'resource_server_id', 'mcp_server_id', 'subject_kind', 'subjects', 'scopes', 'default_scopes', 'rs_client_id',
  'lifetime', 'max_auth_age', 'authorization_details_types', 'enabled', 'description', 'not_before', 'expires_at', 'created_at', 'updated_at',
  'created_by', 'updated_by'] as const satisfies readonly (keyof PolicyRulesTable)[];

type TargetRow = ResourceServerRow & { aud_sub: string | null } & { [K in (typeof RULE_COLUMNS)[number] as `r_${K}`]: PolicyRulesTable[K] | null };

/**
 * The Resource AS an audience names, this client's candidate rules for it and the user's `aud_sub` there, in one
 * statement (part of `lookupExchange` below): on the token endpoint's path each read is a round trip to PostgreSQL.
 */
const targetQuery = (db: Kysely<Schema>, p: Param) =>
  db.selectFrom('resource_servers as rs')
    .leftJoin('policy_rules as r', (join) => join.onRef('r.resource_server_id', '=', 'rs.id').on('r.client_id', '=', p('clientId')))
    .select(RS_COLUMNS.map((c) => `rs.${c}` as const))
    .select(RULE_COLUMNS.map((c) => `r.${c} as r_${c}` as const))
    .select((eb) => eb.selectFrom('audience_subjects').select('aud_sub')
      .whereRef('audience_subjects.resource_server_id', '=', 'rs.id').where('audience_subjects.user_sub', '=', p('sub')).as('aud_sub'))
    .where((eb) => eb.or([
      eb('rs.issuer', '=', p('audience')),
      eb('rs.id', '=', eb.selectFrom('resource_server_aliases').select('resource_server_id').where('alias', '=', p('audience'))),
    ]));

/** What a token exchange reads of the catalog, at once (src/exchange/pipeline.ts, `ExchangePorts.lookup`). */
export interface TargetLookup {
  resourceServer: ResourceServerFacts | undefined;
  mcpServers: McpServerRecord[];
  /** the client's candidate rules for that Resource AS, disabled ones too */
  rules: Rule[];
  /** the user's subject identifier at that Resource AS, when an admin mapped one */
  audSub: string | undefined;
}

const ruleOf = (row: TargetRow): PolicyRulesTable =>
  Object.fromEntries(RULE_COLUMNS.map((c) => [c, row[`r_${c}`]])) as unknown as PolicyRulesTable;

/** The target those rows describe (the Resource AS with the client's rules there and the user's aud_sub), with its MCP servers. */
function targetOf(rows: readonly TargetRow[], mcpServers: McpServerRecord[]): TargetLookup {
  const first = rows[0];
  if (!first) return { resourceServer: undefined, mcpServers, rules: [], audSub: undefined };
  // should an issuer and an alias name two Resource ASes, the first found is the one, as findResourceServer has it
  const mine = rows.filter((r) => r.id === first.id);
  return {
    resourceServer: { id: first.id, issuer: first.issuer, name: first.name, enabled: Boolean(first.enabled), release: toRelease(first) },
    mcpServers,
    rules: mine.filter((r) => r.r_id !== null).map((r) => toRule(ruleOf(r))),
    audSub: first.aud_sub ?? undefined,
  };
}

/** What an exchange looks up: for this user, this audience and these resources, as this client. */
export interface ExchangeQuery { sub: string; audience: string; resources: readonly string[]; clientId: string }

/** Everything an exchange reads once it knows the user: who they are now, and the target of the request. */
export interface ExchangeLookup extends TargetLookup {
  /** the user and their groups; undefined: no such user */
  member: Member | undefined;
}

/** A statement's rows as one JSON array (PostgreSQL), so that several row sets come back in one row. */
const rowsAsJson = (rows: Expression<unknown>, orderBy?: string) =>
  sql`(select coalesce(json_agg(t${orderBy === undefined ? sql`` : sql` order by t.${sql.ref(orderBy)}`}), '[]'::json) from (${rows}) as t)`;

type LookupArgs = { sub: string; audience: string; clientId: string; resources: string[] };
type LookupRow = { member: MemberRow[]; target: TargetRow[]; mcp: McpRow[] };

const exchangeColumns = (db: Kysely<Schema>, p: Param) => [
  rowsAsJson(memberQuery(db, p), 'group_name').as('member'),
  rowsAsJson(targetQuery(db, p)).as('target'),
  rowsAsJson(db.selectFrom('mcp_servers').select(MCP_COLUMNS).where('resource', '=', sql<string>`any(${p<string[]>('resources')})`)).as('mcp'),
] as const;

const exchangeReads = prepared<Schema, LookupArgs, LookupRow>((db, p) => db.selectNoFrom([...exchangeColumns(db, p)]));

const lookupOf = (row: LookupRow): ExchangeLookup => ({ member: memberOf(row.member), ...targetOf(row.target, row.mcp.map(toMcpServer)) });

/**
 * PostgreSQL only (every statement there is a round trip, the costliest part of an exchange): the user with
 * their groups, the Resource AS by issuer or alias with the client's candidate rules there (disabled ones too)
 * and the user's aud_sub, and the MCP servers of the resources, in one statement, each part as JSON rows. The
 * same answers as findMemberBySub, findResourceServer, rulesFor, findAudienceSubject and findMcpServers (held
 * to it by test/catalog-lookup.test.ts). On SQLite, where a read costs microseconds, those single-table
 * statements are cheaper than this join.
 */
export async function lookupExchange(db: DB, q: ExchangeQuery): Promise<ExchangeLookup> {
  const [row] = await exchangeReads(db, { sub: q.sub, audience: q.audience, clientId: q.clientId, resources: [...q.resources] });
  if (!row) throw new Error('the exchange lookup returned no row');
  return lookupOf(row);
}

/**
 * The rules table as the candidate sets of every client and Resource AS (what `rulesFor` returns for each pair),
 * narrowed to one client, one Resource AS or both: effective access decides over these, pair by pair.
 */
export async function candidateRules(db: DB, where: { clientId?: string | undefined; resourceServerId?: string | undefined }): Promise<Rule[]> {
  let q = db.selectFrom('policy_rules').selectAll();
  if (where.clientId !== undefined) q = q.where('client_id', '=', where.clientId);
  if (where.resourceServerId !== undefined) q = q.where('resource_server_id', '=', where.resourceServerId);
  return (await q.execute()).map(toRule);
}
