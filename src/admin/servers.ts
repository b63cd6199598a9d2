import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { now, type DB } from '../db/index.ts';
import { diff, recordChanges, type Actor, type Change } from './changes.ts';
import { Conflict, InvalidInput, NotFound, invalid, type Issue } from './errors.ts';
import { Name, Scope, Uri } from './fields.ts';
import { isoFromSeconds } from './format.ts';
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

export const ResourceServerDoc = z.strictObject({
  issuer: Uri,
  name: Name,
  /** other names clients may use as `audience` (e.g. a URN) */
  aliases: z.array(Uri).max(20).default([]),
  enabled: z.boolean().optional(),
  mcp_servers: z.array(McpServerDoc).max(500).default([]),
});
export type ResourceServerDoc = z.infer<typeof ResourceServerDoc>;

export const ResourceServerPatch = z.strictObject({
  name: Name.optional(),
  aliases: z.array(Uri).max(20).optional(),
  enabled: z.boolean().optional(),
});
export type ResourceServerPatch = z.infer<typeof ResourceServerPatch>;

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
  return rows.map((r) => ({
    id: r.id,
    issuer: r.issuer,
    name: r.name,
    aliases: aliases.filter((a) => a.resource_server_id === r.id).map((a) => a.alias),
    enabled: Boolean(r.enabled),
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
  }));
}

export const resourceServerState = (v: ResourceServerView): ResourceServerState =>
  ({ issuer: v.issuer, name: v.name, aliases: v.aliases, enabled: v.enabled });

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
 * Creates or updates the Resource AS (not its MCP servers), inside the caller's transaction; returns its id.
 * An audience must name one Resource AS only: an alias that is another server's issuer or alias is refused.
 */
export async function writeResourceServer(db: DB, rs: Omit<ResourceServerDoc, 'mcp_servers'>, at = now(), path: (string | number)[] = []): Promise<string> {
  const existing = await db.selectFrom('resource_servers').select('id').where('issuer', '=', rs.issuer).executeTakeFirst();
  const id = existing?.id ?? randomUUID();
  const issues: Issue[] = [];
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
  if (issues.length) throw new InvalidInput(issues);
  const fields = { name: rs.name, enabled: rs.enabled === false ? 0 : 1, updated_at: at };
  if (existing) await db.updateTable('resource_servers').set(fields).where('id', '=', id).execute();
  else await db.insertInto('resource_servers').values({ id, issuer: rs.issuer, created_at: at, ...fields }).execute();
  await db.deleteFrom('resource_server_aliases').where('resource_server_id', '=', id).execute();
  if (aliases.length) await db.insertInto('resource_server_aliases').values(aliases.map((alias) => ({ alias, resource_server_id: id }))).execute();
  return id;
}

/** Creates or updates an MCP server of the Resource AS `resourceServerId`, inside the caller's transaction; returns its id. */
export async function writeMcpServer(db: DB, resourceServerId: string, m: McpServerDoc, at = now()): Promise<string> {
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

export async function createResourceServer(db: DB, input: ResourceServerDoc, by: Actor): Promise<ResourceServerView> {
  return db.transaction().execute(async (trx) => {
    if (await findResourceServerByIssuer(trx, input.issuer)) throw invalid(['issuer'], `Resource AS ${input.issuer} already exists`);
    const id = await writeResourceServer(trx, input);
    const issues: Issue[] = [];
    for (const [i, m] of input.mcp_servers.entries()) {
      if (await findMcpServerByResource(trx, m.resource)) issues.push({ path: ['mcp_servers', i, 'resource'], message: `MCP server ${m.resource} already exists` });
      else await writeMcpServer(trx, id, m);
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
  return db.transaction().execute(async (trx) => {
    const current = await getResourceServer(trx, id);
    const before = resourceServerState(current);
    await writeResourceServer(trx, { ...before, ...patch });
    const view = await getResourceServer(trx, id);
    const change = diff('resource_server', view.issuer, before, resourceServerState(view));
    if (change) await recordChanges(trx, by, [change]);
    return view;
  });
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

export async function createMcpServer(db: DB, resourceServerId: string, input: McpServerDoc, by: Actor): Promise<McpServerView> {
  return db.transaction().execute(async (trx) => {
    await getResourceServer(trx, resourceServerId);
    if (await findMcpServerByResource(trx, input.resource)) throw invalid(['resource'], `MCP server ${input.resource} already exists`);
    const id = await writeMcpServer(trx, resourceServerId, input);
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
