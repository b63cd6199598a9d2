import { findAudienceSubject, findMcpServers, findResourceServer, lookupExchange, rulesFor } from '../db/catalog.ts';
import { onPostgres, type DB } from '../db/index.ts';
import { findMemberBySub } from '../db/users.ts';
import type { LookupReads } from './lookup-cache.ts';
import type { Directory, ExchangePorts, RuleSource } from './pipeline.ts';
import type { Catalog } from './target.ts';

/**
 * The pipeline's stores over the database, the same for the token endpoint and the simulator; `reads`: what the
 * token endpoint's lookup cache reads through (src/exchange/lookup-cache.ts).
 */
export function databasePorts(db: DB): { directory: Directory; catalog: Catalog; rules: RuleSource; lookup?: ExchangePorts['lookup']; reads: LookupReads } {
  return {
    reads: {
      member: (sub) => findMemberBySub(db, sub),
      target: async ({ audience, resources, clientId }) => {
        const [resourceServer, mcpServers] = await Promise.all([findResourceServer(db, audience), findMcpServers(db, resources)]);
        return { resourceServer, mcpServers, rules: resourceServer ? await rulesFor(db, clientId, resourceServer.id) : [] };
      },
      audSub: (resourceServerId, sub) => findAudienceSubject(db, resourceServerId, sub),
      ...(onPostgres(db) ? { all: (q) => lookupExchange(db, q) } : {}),
    },
    directory: { member: (sub) => findMemberBySub(db, sub) },
    catalog: {
      resourceServer: (audience) => findResourceServer(db, audience),
      mcpServers: (resources) => findMcpServers(db, resources),
      audienceSubject: (resourceServerId, sub) => findAudienceSubject(db, resourceServerId, sub),
    },
    rules: { rulesFor: (clientId, resourceServerId) => rulesFor(db, clientId, resourceServerId) },
    // On PostgreSQL the reads are one round trip; on SQLite, where a read costs microseconds, the separate
    // single-table statements are cheaper than the joins (measured with other work between exchanges, as in the
    // server: 95–115 µs per exchange against 200–220 for plain joins and 200–220 for the JSON statement).
    ...(onPostgres(db) ? { lookup: (q) => lookupExchange(db, q) } : {}),
  };
}
