import type { DB, Schema } from '../db/index.ts';
import { prepared } from '../db/prepared.ts';
import type { McpServersTable, PolicyRulesTable, ResourceServersTable } from '../db/schema.ts';
import type { McpServerFacts, Rule, Subjects } from '../policy/index.ts';
import type { CheckList } from './checks.ts';

export interface Target {
  resourceServer: { id: string; issuer: string; name: string; enabled: boolean };
  /** empty for an audience-only request */
  mcpServers: McpServerFacts[];
}

/** RFC 8707 §2: a resource is an absolute URI without a fragment. */
function isResourceIndicator(value: string): boolean {
  try {
    const u = new URL(value);
    return !value.includes('#') && u.protocol.length > 1;
  } catch {
    return false;
  }
}

const resourceServerByAudience = prepared<Schema, { audience: string }, Pick<ResourceServersTable, 'id' | 'issuer' | 'name' | 'enabled'>>((db, p) =>
  db.selectFrom('resource_servers').select(['id', 'issuer', 'name', 'enabled'])
    .where((eb) => eb.or([
      eb('issuer', '=', p('audience')),
      eb('id', '=', eb.selectFrom('resource_server_aliases').select('resource_server_id').where('alias', '=', p('audience'))),
    ])));

export async function findResourceServer(db: DB, audience: string): Promise<Target['resourceServer'] | undefined> {
  const row = (await resourceServerByAudience(db, { audience }))[0];
  return row && { ...row, enabled: Boolean(row.enabled) };
}

type McpRow = Pick<McpServersTable, 'id' | 'resource' | 'resource_server_id' | 'scopes' | 'enabled'>;
const MCP_COLUMNS = ['id', 'resource', 'resource_server_id', 'scopes', 'enabled'] as const;
// One resource is the common case (the MCP profile sends exactly one): that query is prepared once.
const mcpServerByResource = prepared<Schema, { resource: string }, McpRow>((db, p) =>
  db.selectFrom('mcp_servers').select(MCP_COLUMNS).where('resource', '=', p('resource')));

export async function findMcpServers(db: DB, resources: string[]) {
  if (resources.length === 0) return [];
  const rows: McpRow[] = resources.length === 1
    ? await mcpServerByResource(db, { resource: resources[0]! })
    : await db.selectFrom('mcp_servers').select(MCP_COLUMNS).where('resource', 'in', resources).execute();
  return rows.map((r) => ({ id: r.id, resource: r.resource, resourceServerId: r.resource_server_id, scopes: JSON.parse(r.scopes) as string[], enabled: Boolean(r.enabled) }));
}

/**
 * SPEC.md Step 2: `audience` names a known Resource AS (by issuer or alias), and each `resource` is an MCP
 * server that AS serves. The map of servers is topology, not policy: naming it in errors discloses nothing
 * RFC 9728 metadata does not already publish.
 */
export async function resolveTarget(db: DB, checks: CheckList, audience: string, resources: string[]): Promise<Target> {
  const resourceServer = await findResourceServer(db, audience);
  if (!resourceServer) checks.fail('audience', `audience ${audience} is not a Resource AS known to this IdP; use the issuer identifier from the MCP server's authorization server metadata`);
  checks.pass('audience', resourceServer.issuer === audience ? resourceServer.issuer : `${audience} is an alias of ${resourceServer.issuer}`);

  const malformed = resources.find((r) => !isResourceIndicator(r));
  if (malformed !== undefined) checks.fail('resource', `resource ${malformed} is not an absolute URI without a fragment (RFC 8707)`);
  const servers = await findMcpServers(db, resources);
  for (const r of resources) {
    const server = servers.find((s) => s.resource === r);
    if (!server) checks.fail('resource', `resource ${r} is not an MCP server known to this IdP`);
    if (server.resourceServerId !== resourceServer.id) checks.fail('resource', `resource ${r} is not served by audience ${audience}`);
  }
  checks.pass('resource', resources.length ? resources.join(' ') : 'none requested (audience-only)');
  return { resourceServer, mcpServers: resources.map((r) => servers.find((s) => s.resource === r)!) };
}

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
  };
}

/**
 * The candidate rules: every rule of this client for this Resource AS (disabled ones too, so the decision can
 * say why). One indexed lookup on (client_id, resource_server_id), whatever the size of the table.
 */
const rulesByClientTarget = prepared<Schema, { clientId: string; resourceServerId: string }, PolicyRulesTable>((db, p) =>
  db.selectFrom('policy_rules').selectAll()
    .where('client_id', '=', p('clientId')).where('resource_server_id', '=', p('resourceServerId')));

export async function loadRules(db: DB, clientId: string, resourceServerId: string): Promise<Rule[]> {
  return (await rulesByClientTarget(db, { clientId, resourceServerId })).map(toRule);
}
