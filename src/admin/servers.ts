import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { toRelease } from '../db/catalog.ts';
import { now, type DB } from '../db/index.ts';
import { RELEASABLE_CLAIMS, SUB_ID_FORMATS, type ReleasableClaim, type SubIdFormat } from '../db/catalog.ts';
import { diff, recordChanges, type Actor, type Change } from './changes.ts';
import { Conflict, InvalidInput, NotFound, invalid, type Issue } from './errors.ts';
import { DEVELOPMENT_URLS, insecureUrl, Name, Scope, Uri, type UrlPolicy } from './fields.ts';
import { isoFromSeconds, present } from './format.ts';
import { rulesReferencing } from './rules.ts';

/**
 * Resource authorization servers (the ID-JAG audiences) and the MCP servers each one serves (the resources),
 * with the scopes every MCP server defines. Issuer and resource identify them in documents and in the change
 * log, so neither changes after creation: a renamed server is a new server.
 */

export const McpServerDoc = z.strictObject({
  resource: Uri,
  name: Name,
  scopes: z.array(Scope).max(200).default([]),
  enabled: z.boolean().optional(),
});
export type McpServerDoc = z.infer<typeof McpServerDoc>;

/** Which identity claims the Resource AS's ID-JAGs carry (src/exchange/release.ts); none by default. */
const ReleasedClaims = z.array(z.enum(RELEASABLE_CLAIMS, { error: `a released claim is one of ${RELEASABLE_CLAIMS.join(', ')}` }))
  .refine((c) => new Set(c).size === c.length, 'each claim once');
const SubIdFormatField = z.enum(SUB_ID_FORMATS, { error: `sub_id_format is one of ${SUB_ID_FORMATS.join(', ')}` });
const Tenant = z.string().trim().min(1).max(255);
/** The Resource AS's own identifier for a user: opaque to idjag, compared exactly. */
export const AudSub = z.string().min(1, 'enter the identifier').max(255).regex(/^[^\s\x00-\x1f\x7f]+$/, 'aud_sub has no spaces or control characters');
const UsernameKey = z.string().regex(/^[A-Za-z0-9._@-]{1,200}$/, 'usernames use letters, digits and . _ @ -');
/** username → the subject identifier the Resource AS knows that user by (the ID-JAG `aud_sub`) */
const AudSubs = z.record(UsernameKey, AudSub).refine((m) => Object.keys(m).length <= 10_000, 'at most 10000 users per Resource AS');

export const ResourceServerDoc = z.strictObject({
  issuer: Uri,
  name: Name,
  /** other names clients may use as `audience` (e.g. a URN) */
  aliases: z.array(Uri).max(20).default([]),
  enabled: z.boolean().optional(),
  released_claims: ReleasedClaims.default([]),
  /** omitted: the ID-JAG carries no `sub_id` */
  sub_id_format: SubIdFormatField.optional(),
  /** the ID-JAG `aud_tenant` */
  aud_tenant: Tenant.optional(),
  aud_subs: AudSubs.default({}),
  mcp_servers: z.array(McpServerDoc).max(500).default([]),
});
export type ResourceServerDoc = z.infer<typeof ResourceServerDoc>;

export const ResourceServerPatch = z.strictObject({
  name: Name.optional(),
  aliases: z.array(Uri).max(20).optional(),
  enabled: z.boolean().optional(),
  released_claims: ReleasedClaims.optional(),
  sub_id_format: SubIdFormatField.nullable().optional(),
  aud_tenant: Tenant.nullable().optional(),
  /** the whole mapping (PUT and DELETE /resource-servers/{id}/aud-subs/{username} change one user) */
  aud_subs: AudSubs.optional(),
});
export type ResourceServerPatch = z.infer<typeof ResourceServerPatch>;

export const AudSubInput = z.strictObject({ aud_sub: AudSub });

export const McpServerPatch = z.strictObject({
  name: Name.optional(),
  scopes: z.array(Scope).max(200).optional(),
  enabled: z.boolean().optional(),
});
export type McpServerPatch = z.infer<typeof McpServerPatch>;

export interface ResourceServerState {
  issuer: string;
  name: string;
  aliases: string[];
  enabled: boolean;
  released_claims: ReleasableClaim[];
  sub_id_format?: SubIdFormat;
  aud_tenant?: string;
  /** username → aud_sub, by username */
  aud_subs: Record<string, string>;
}

export interface McpServerState {
  resource: string;
  name: string;
  scopes: string[];
  enabled: boolean;
  /** the issuer of the Resource AS that serves it */
  audience: string;
}

export interface McpServerView extends McpServerState {
  id: string;
  resource_server_id: string;
  created_at: string;
  updated_at: string;
}

export interface ResourceServerView extends ResourceServerState {
  id: string;
  mcp_servers: McpServerView[];
  created_at: string;
  updated_at: string;
}

async function rsViews(db: DB, ids?: string[]): Promise<ResourceServerView[]> {
  let q = db.selectFrom('resource_servers').selectAll();
  if (ids) q = q.where('id', 'in', ids.length ? ids : ['']);
  const rows = await q.orderBy('issuer').execute();
  if (rows.length === 0) return [];
  const rsIds = rows.map((r) => r.id);
  const aliases = await db.selectFrom('resource_server_aliases').selectAll().where('resource_server_id', 'in', rsIds).orderBy('alias').execute();
  const mcps = await db.selectFrom('mcp_servers').selectAll().where('resource_server_id', 'in', rsIds).orderBy('resource').execute();
  const subjects = await db.selectFrom('audience_subjects').innerJoin('users', 'users.sub', 'audience_subjects.user_sub')
    .select(['audience_subjects.resource_server_id', 'users.username', 'audience_subjects.aud_sub'])
    .where('audience_subjects.resource_server_id', 'in', rsIds).orderBy('users.username').execute();
  return rows.map((r) => {
    const release = toRelease(r);
    return {
      id: r.id,
      issuer: r.issuer,
      name: r.name,
      aliases: aliases.filter((a) => a.resource_server_id === r.id).map((a) => a.alias),
      enabled: Boolean(r.enabled),
      released_claims: release.claims,
      ...present({ sub_id_format: release.subIdFormat, aud_tenant: release.audTenant }),
      aud_subs: Object.fromEntries(subjects.filter((x) => x.resource_server_id === r.id).map((x) => [x.username, x.aud_sub])),
      mcp_servers: mcps.filter((m) => m.resource_server_id === r.id).map((m) => ({
        id: m.id,
        resource: m.resource,
        name: m.name,
        scopes: JSON.parse(m.scopes) as string[],
        enabled: Boolean(m.enabled),
        audience: r.issuer,
        resource_server_id: r.id,
        created_at: isoFromSeconds(m.created_at),
        updated_at: isoFromSeconds(m.updated_at),
      })),
      created_at: isoFromSeconds(r.created_at),
      updated_at: isoFromSeconds(r.updated_at),
    };
  });
}

export const resourceServerState = (v: ResourceServerView): ResourceServerState => ({
  issuer: v.issuer, name: v.name, aliases: v.aliases, enabled: v.enabled, released_claims: v.released_claims,
  ...present({ sub_id_format: v.sub_id_format, aud_tenant: v.aud_tenant }), aud_subs: v.aud_subs,
});

export const mcpServerState = (v: McpServerView): McpServerState =>
  ({ resource: v.resource, name: v.name, scopes: v.scopes, enabled: v.enabled, audience: v.audience });

export const listResourceServers = (db: DB) => rsViews(db);

export async function getResourceServer(db: DB, id: string): Promise<ResourceServerView> {
  const v = (await rsViews(db, [id]))[0];
  if (!v) throw new NotFound('resource server', id);
  return v;
}

export async function findResourceServerByIssuer(db: DB, issuer: string): Promise<ResourceServerView | undefined> {
  const row = await db.selectFrom('resource_servers').select('id').where('issuer', '=', issuer).executeTakeFirst();
  return row && (await rsViews(db, [row.id]))[0];
}

export async function findMcpServerByResource(db: DB, resource: string): Promise<McpServerView | undefined> {
  const row = await db.selectFrom('mcp_servers').select(['id', 'resource_server_id']).where('resource', '=', resource).executeTakeFirst();
  if (!row) return undefined;
  return (await rsViews(db, [row.resource_server_id]))[0]?.mcp_servers.find((m) => m.id === row.id);
}

export async function getMcpServer(db: DB, id: string): Promise<McpServerView> {
  const row = await db.selectFrom('mcp_servers').select('resource_server_id').where('id', '=', id).executeTakeFirst();
  const view = row && (await rsViews(db, [row.resource_server_id]))[0]?.mcp_servers.find((m) => m.id === id);
  if (!view) throw new NotFound('MCP server', id);
  return view;
}

/**
 * The users an aud_sub mapping names, by sub; an unknown username, or one aud_sub given to two users (one
 * account at the Resource AS would be two people here), is an issue at its entry.
 */
async function audienceSubjects(db: DB, audSubs: Record<string, string>, path: (string | number)[], issues: Issue[]): Promise<{ user_sub: string; aud_sub: string }[]> {
  const usernames = Object.keys(audSubs);
  if (usernames.length === 0) return [];
  const users = new Map<string, string>();
  for (let i = 0; i < usernames.length; i += 500) {
    const part = usernames.slice(i, i + 500);
    for (const u of await db.selectFrom('users').select(['username', 'sub']).where('username', 'in', part).execute()) users.set(u.username, u.sub);
  }
  const owner = new Map<string, string>();
  const rows: { user_sub: string; aud_sub: string }[] = [];
  for (const [username, audSub] of Object.entries(audSubs)) {
    const sub = users.get(username);
    if (sub === undefined) issues.push({ path: [...path, 'aud_subs', username], message: `unknown user ${username}` });
    const other = owner.get(audSub);
    if (other !== undefined) issues.push({ path: [...path, 'aud_subs', username], message: `${audSub} is already ${other}'s aud_sub at this Resource AS` });
    owner.set(audSub, username);
    if (sub !== undefined) rows.push({ user_sub: sub, aud_sub: audSub });
  }
  return rows;
}

/**
 * Creates or updates the Resource AS (not its MCP servers), inside the caller's transaction; returns its id.
 * An audience must name one Resource AS only: an alias that is another server's issuer or alias is refused.
 * A new issuer must be https in production (`urls`).
 */
export async function writeResourceServer(db: DB, rs: Omit<ResourceServerDoc, 'mcp_servers'>, at = now(), path: (string | number)[] = [], urls: UrlPolicy = DEVELOPMENT_URLS): Promise<string> {
  const existing = await db.selectFrom('resource_servers').select('id').where('issuer', '=', rs.issuer).executeTakeFirst();
  const id = existing?.id ?? randomUUID();
  const issues: Issue[] = [];
  const insecure = existing ? undefined : insecureUrl(rs.issuer, urls);
  if (insecure) issues.push({ path: [...path, 'issuer'], message: insecure });
  const issuerAlias = await db.selectFrom('resource_server_aliases').select('resource_server_id').where('alias', '=', rs.issuer).executeTakeFirst();
  if (issuerAlias && issuerAlias.resource_server_id !== id) issues.push({ path: [...path, 'issuer'], message: `${rs.issuer} is already an alias of another Resource AS` });
  const aliases = [...new Set(rs.aliases)];
  for (const [i, alias] of aliases.entries()) {
    const asIssuer = await db.selectFrom('resource_servers').select('id').where('issuer', '=', alias).executeTakeFirst();
    const asAlias = await db.selectFrom('resource_server_aliases').select('resource_server_id').where('alias', '=', alias).executeTakeFirst();
    if ((asIssuer && asIssuer.id !== id) || (asAlias && asAlias.resource_server_id !== id)) {
      issues.push({ path: [...path, 'aliases', i], message: `${alias} already names another Resource AS` });
    }
  }
  const subjects = await audienceSubjects(db, rs.aud_subs, path, issues);
  if (issues.length) throw new InvalidInput(issues);
  const fields = {
    name: rs.name, enabled: rs.enabled === false ? 0 : 1, updated_at: at,
    released_claims: JSON.stringify([...new Set(rs.released_claims)]), sub_id_format: rs.sub_id_format ?? null, aud_tenant: rs.aud_tenant ?? null,
  };
  if (existing) await db.updateTable('resource_servers').set(fields).where('id', '=', id).execute();
  else await db.insertInto('resource_servers').values({ id, issuer: rs.issuer, created_at: at, ...fields }).execute();
  await db.deleteFrom('resource_server_aliases').where('resource_server_id', '=', id).execute();
  if (aliases.length) await db.insertInto('resource_server_aliases').values(aliases.map((alias) => ({ alias, resource_server_id: id }))).execute();
  await db.deleteFrom('audience_subjects').where('resource_server_id', '=', id).execute();
  for (let i = 0; i < subjects.length; i += 500) {
    await db.insertInto('audience_subjects').values(subjects.slice(i, i + 500).map((x) => ({ resource_server_id: id, ...x }))).execute();
  }
  return id;
}

/**
 * Creates or updates an MCP server of the Resource AS `resourceServerId`, inside the caller's transaction;
 * returns its id. A new resource must be https in production (`urls`).
 */
export async function writeMcpServer(db: DB, resourceServerId: string, m: McpServerDoc, at = now(), path: (string | number)[] = [], urls: UrlPolicy = DEVELOPMENT_URLS): Promise<string> {
  const known = await db.selectFrom('mcp_servers').select('id').where('resource', '=', m.resource).executeTakeFirst();
  const insecure = known ? undefined : insecureUrl(m.resource, urls);
  if (insecure) throw invalid([...path, 'resource'], insecure);
  const fields = { name: m.name, resource_server_id: resourceServerId, scopes: JSON.stringify([...new Set(m.scopes)]), enabled: m.enabled === false ? 0 : 1, updated_at: at };
  await db.insertInto('mcp_servers').values({ id: randomUUID(), resource: m.resource, created_at: at, ...fields })
    .onConflict((oc) => oc.column('resource').doUpdateSet(fields)).execute();
  const { id } = await db.selectFrom('mcp_servers').select('id').where('resource', '=', m.resource).executeTakeFirstOrThrow();
  return id;
}

/**
 * After an MCP server changed (and, in an import, after the document's rules were written too): the rules
 * naming it must still fit, allowing only scopes it defines and belonging to the Resource AS that serves it.
 */
export async function checkRulesFit(db: DB, mcpServerId: string, path: (string | number)[] = []): Promise<void> {
  const mcp = await db.selectFrom('mcp_servers').select(['resource', 'resource_server_id', 'scopes']).where('id', '=', mcpServerId).executeTakeFirstOrThrow();
  const defined = JSON.parse(mcp.scopes) as string[];
  const rules = await db.selectFrom('policy_rules').select(['id', 'resource_server_id', 'scopes']).where('mcp_server_id', '=', mcpServerId).orderBy('id').execute();
  const issues: Issue[] = [];
  for (const r of rules) {
    const missing = (JSON.parse(r.scopes) as string[]).filter((s) => !defined.includes(s));
    if (missing.length) issues.push({ path: [...path, 'scopes'], message: `rule ${r.id} allows ${missing.join(' ')}, which ${mcp.resource} would no longer define: keep the scope, or change the rule first` });
    if (r.resource_server_id !== mcp.resource_server_id) issues.push({ path: [...path, 'resource'], message: `rule ${r.id} binds ${mcp.resource} to another Resource AS: delete the rule first` });
  }
  if (issues.length) throw new InvalidInput(issues);
}

export async function createResourceServer(db: DB, input: ResourceServerDoc, by: Actor, urls: UrlPolicy = DEVELOPMENT_URLS): Promise<ResourceServerView> {
  return db.transaction().execute(async (trx) => {
    if (await findResourceServerByIssuer(trx, input.issuer)) throw invalid(['issuer'], `Resource AS ${input.issuer} already exists`);
    // the issuer's problems and the MCP servers' reported together: one answer names every field to fix
    const insecure: Issue[] = input.mcp_servers.flatMap((m, i) => {
      const problem = insecureUrl(m.resource, urls);
      return problem ? [{ path: ['mcp_servers', i, 'resource'], message: problem }] : [];
    });
    const id = await writeResourceServer(trx, input, now(), [], urls).catch((err: unknown) => {
      throw err instanceof InvalidInput ? new InvalidInput([...err.issues, ...insecure]) : err;
    });
    if (insecure.length) throw new InvalidInput(insecure);
    const issues: Issue[] = [];
    for (const [i, m] of input.mcp_servers.entries()) {
      if (await findMcpServerByResource(trx, m.resource)) issues.push({ path: ['mcp_servers', i, 'resource'], message: `MCP server ${m.resource} already exists` });
      else await writeMcpServer(trx, id, m, now(), ['mcp_servers', i], urls);
    }
    if (issues.length) throw new InvalidInput(issues);
    const view = await getResourceServer(trx, id);
    await recordChanges(trx, by, [
      { action: 'create', entity: 'resource_server', entity_id: view.issuer, before: null, after: resourceServerState(view) },
      ...view.mcp_servers.map((m): Change => ({ action: 'create', entity: 'mcp_server', entity_id: m.resource, before: null, after: mcpServerState(m) })),
    ]);
    return view;
  });
}

export async function updateResourceServer(db: DB, id: string, patch: ResourceServerPatch, by: Actor): Promise<ResourceServerView> {
  return db.transaction().execute(async (trx) => updateResourceServerIn(trx, await getResourceServer(trx, id), patch, by));
}

/** One user's aud_sub at a Resource AS: set (or replaced), or removed with `audSub` null; recorded as a change of the Resource AS. */
export async function setAudienceSubject(db: DB, id: string, username: string, audSub: string | null, by: Actor): Promise<ResourceServerView> {
  return db.transaction().execute(async (trx) => {
    const current = await getResourceServer(trx, id);
    // a Map, not an object: a username is data, whatever it spells (`__proto__` included)
    const mapped = new Map(Object.entries(current.aud_subs));
    if (audSub === null) {
      if (!mapped.delete(username)) throw new NotFound(`aud_sub at ${current.issuer} for user`, username);
    } else {
      mapped.set(username, audSub);
    }
    return updateResourceServerIn(trx, current, { aud_subs: Object.fromEntries(mapped) }, by);
  });
}

async function updateResourceServerIn(trx: DB, current: ResourceServerView, patch: ResourceServerPatch, by: Actor): Promise<ResourceServerView> {
  const before = resourceServerState(current);
  const next = { ...before, ...patch };
  // null clears an optional field
  await writeResourceServer(trx, {
    ...next,
    sub_id_format: next.sub_id_format ?? undefined,
    aud_tenant: next.aud_tenant ?? undefined,
  });
  const view = await getResourceServer(trx, current.id);
  const change = diff('resource_server', view.issuer, before, resourceServerState(view));
  if (change) await recordChanges(trx, by, [change]);
  return view;
}

/**
 * Before a user is deleted (their aud_subs go with them, through the foreign key): the Resource ASes that
 * map them, as they are, so the deletion can be recorded as a change of each one too.
 */
export async function resourceServersMapping(db: DB, sub: string): Promise<ResourceServerView[]> {
  const ids = (await db.selectFrom('audience_subjects').select('resource_server_id').where('user_sub', '=', sub).execute()).map((r) => r.resource_server_id);
  return ids.length ? rsViews(db, ids) : [];
}

/** The changes to record once the user those Resource ASes mapped is gone. */
export async function mappingChanges(db: DB, before: ResourceServerView[]): Promise<Change[]> {
  const changes: Change[] = [];
  for (const rs of before) {
    const change = diff('resource_server', rs.issuer, resourceServerState(rs), resourceServerState(await getResourceServer(db, rs.id)));
    if (change) changes.push(change);
  }
  return changes;
}

/** Every aud_sub of one user, by Resource AS (the user's admin page shows them). */
export async function audienceSubjectsOf(db: DB, sub: string): Promise<{ resource_server_id: string; issuer: string; name: string; aud_sub: string }[]> {
  return db.selectFrom('audience_subjects').innerJoin('resource_servers', 'resource_servers.id', 'audience_subjects.resource_server_id')
    .select(['audience_subjects.resource_server_id', 'resource_servers.issuer', 'resource_servers.name', 'audience_subjects.aud_sub'])
    .where('audience_subjects.user_sub', '=', sub).orderBy('resource_servers.issuer').execute();
}

/** Refused while rules name the server: deleting it would silently delete them too (the foreign keys cascade). */
export async function deleteResourceServer(db: DB, id: string, by: Actor): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const current = await getResourceServer(trx, id);
    const rules = await rulesReferencing(trx, { resourceServerId: id });
    if (rules.length) throw new Conflict(`Resource AS ${current.issuer} is named by rules ${rules.join(', ')}: delete those rules first, or disable the server`);
    await trx.deleteFrom('resource_servers').where('id', '=', id).execute();
    await recordChanges(trx, by, [
      ...current.mcp_servers.map((m): Change => ({ action: 'delete', entity: 'mcp_server', entity_id: m.resource, before: mcpServerState(m), after: null })),
      { action: 'delete', entity: 'resource_server', entity_id: current.issuer, before: resourceServerState(current), after: null },
    ]);
  });
}

export async function createMcpServer(db: DB, resourceServerId: string, input: McpServerDoc, by: Actor, urls: UrlPolicy = DEVELOPMENT_URLS): Promise<McpServerView> {
  return db.transaction().execute(async (trx) => {
    await getResourceServer(trx, resourceServerId);
    if (await findMcpServerByResource(trx, input.resource)) throw invalid(['resource'], `MCP server ${input.resource} already exists`);
    const id = await writeMcpServer(trx, resourceServerId, input, now(), [], urls);
    const view = await getMcpServer(trx, id);
    await recordChanges(trx, by, [{ action: 'create', entity: 'mcp_server', entity_id: view.resource, before: null, after: mcpServerState(view) }]);
    return view;
  });
}

export async function updateMcpServer(db: DB, id: string, patch: McpServerPatch, by: Actor): Promise<McpServerView> {
  return db.transaction().execute(async (trx) => {
    const current = await getMcpServer(trx, id);
    const before = mcpServerState(current);
    await writeMcpServer(trx, current.resource_server_id, { resource: before.resource, name: patch.name ?? before.name, scopes: patch.scopes ?? before.scopes, enabled: patch.enabled ?? before.enabled });
    await checkRulesFit(trx, id);
    const view = await getMcpServer(trx, id);
    const change = diff('mcp_server', view.resource, before, mcpServerState(view));
    if (change) await recordChanges(trx, by, [change]);
    return view;
  });
}

export async function deleteMcpServer(db: DB, id: string, by: Actor): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const current = await getMcpServer(trx, id);
    const rules = await rulesReferencing(trx, { mcpServerId: id });
    if (rules.length) throw new Conflict(`MCP server ${current.resource} is named by rules ${rules.join(', ')}: delete those rules first, or disable the server`);
    await trx.deleteFrom('mcp_servers').where('id', '=', id).execute();
    await recordChanges(trx, by, [{ action: 'delete', entity: 'mcp_server', entity_id: current.resource, before: mcpServerState(current), after: null }]);
  });
}
