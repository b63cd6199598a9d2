import { findAudienceSubject, findMcpServers, findResourceServer, lookupTarget, rulesFor } from '../db/catalog.ts';
import type { DB } from '../db/index.ts';
import { findMemberBySub } from '../db/users.ts';
import type { Directory, RuleSource } from './pipeline.ts';
import type { Catalog } from './target.ts';

/** The pipeline's stores over the database, the same for the token endpoint and the simulator. */
export function databasePorts(db: DB): { directory: Directory; catalog: Catalog; rules: RuleSource } {
  return {
    directory: { member: (sub) => findMemberBySub(db, sub) },
    catalog: {
      resourceServer: (audience) => findResourceServer(db, audience),
      mcpServers: (resources) => findMcpServers(db, resources),
      audienceSubject: (resourceServerId, sub) => findAudienceSubject(db, resourceServerId, sub),
      lookup: (q) => lookupTarget(db, q),
    },
    rules: { rulesFor: (clientId, resourceServerId) => rulesFor(db, clientId, resourceServerId) },
  };
}
