import type { McpServerRecord, ResourceServerFacts, TargetLookup } from '../db/catalog.ts';
import type { McpServerFacts } from '../policy/index.ts';
import type { CheckList } from './checks.ts';

export interface Target {
  resourceServer: ResourceServerFacts;
  /** empty for an audience-only request */
  mcpServers: McpServerFacts[];
}

/** The catalog the exchange resolves a request's target in (src/db/catalog.ts over the database). */
export interface Catalog {
  resourceServer(audience: string): Promise<ResourceServerFacts | undefined>;
  mcpServers(resources: readonly string[]): Promise<McpServerRecord[]>;
  /** the user's subject identifier at the Resource AS (the ID-JAG `aud_sub`), when an admin mapped one */
  audienceSubject(resourceServerId: string, sub: string): Promise<string | undefined>;
}

/** A catalog that answers from one lookup's results. */
export const lookedUp = (found: TargetLookup): Catalog => ({
  resourceServer: async () => found.resourceServer,
  mcpServers: async () => found.mcpServers,
  audienceSubject: async () => found.audSub,
});

/** RFC 8707 §2: a resource is an absolute URI without a fragment. */
function isResourceIndicator(value: string): boolean {
  try {
    const u = new URL(value);
    return !value.includes('#') && u.protocol.length > 1;
  } catch {
    return false;
  }
}

/**
 * The target (draft §4.3, RFC 8707 §2, the MCP extension): `audience` names a known Resource AS (by issuer or alias), and each `resource` is an MCP
 * server that AS serves. The map of servers is topology, not policy: naming it in errors discloses nothing
 * RFC 9728 metadata does not already publish. A disabled Resource AS or MCP server is refused here, the one
 * place that decides it.
 */
export async function resolveTarget(catalog: Catalog, checks: CheckList, audience: string, resources: string[]): Promise<Target> {
  const resourceServer = await catalog.resourceServer(audience);
  if (!resourceServer) checks.fail('audience', `audience ${audience} is not a Resource AS known to this IdP; use the issuer identifier from the MCP server's authorization server metadata`);
  if (!resourceServer.enabled) {
    checks.fail('audience', 'the audience is not available', { explanation: `Resource AS ${resourceServer.issuer} is disabled`, reason: 'audience_disabled' });
  }
  checks.pass('audience', resourceServer.issuer === audience ? resourceServer.issuer : `${audience} is an alias of ${resourceServer.issuer}`);

  const malformed = resources.find((r) => !isResourceIndicator(r));
  if (malformed !== undefined) checks.fail('resource', `resource ${malformed} is not an absolute URI without a fragment (RFC 8707)`);
  const servers = await catalog.mcpServers(resources);
  for (const r of resources) {
    const server = servers.find((s) => s.resource === r);
    if (!server) checks.fail('resource', `resource ${r} is not an MCP server known to this IdP`);
    if (server.resourceServerId !== resourceServer.id) checks.fail('resource', `resource ${r} is not served by audience ${audience}`);
    if (!server.enabled) checks.fail('resource', `resource ${r} is not available`, { explanation: `MCP server ${r} is disabled`, reason: 'resource_disabled' });
  }
  checks.pass('resource', resources.length ? resources.join(' ') : 'none requested (audience-only)');
  return { resourceServer, mcpServers: resources.map((r) => servers.find((s) => s.resource === r)!) };
}
