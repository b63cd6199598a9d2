import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import type { DB } from '../db/index.ts';
import { demoMcpServer, TODOS_READ, TODOS_WRITE } from './mcp-server.ts';
import { demoResourceAs } from './resource-as.ts';
import { DEMO_AS_CLIENT } from './seeded.ts';

export { DEMO_AGENT, DEMO_AS_CLIENT } from './seeded.ts';

export interface DemoOptions {
  db: DB;
  /** the IdP's issuer; the demo parties live under it: `{issuer}/demo/as`, `{issuer}/demo/mcp` */
  issuer: string;
  /** where this process can reach the IdP over HTTP (the issuer, or the loopback address it listens on) */
  url: string;
  log?: Pick<Logger, 'error' | 'debug'>;
}

export interface Demo {
  middleware: Middleware;
  asIssuer: string;
  mcpResource: string;
  resourceMetadataUrl: string;
  close(): Promise<void>;
}

/**
 * Steps 3 and 4 of the flow on the same base URL as the IdP: the demo Resource AS and the demo MCP server it
 * issues tokens for. Each talks to the other parties only over HTTP (JWKS), as separate deployments would;
 * sharing the process and the database is a convenience of the demo, not a dependency.
 */
export function demoParties(options: DemoOptions): Demo {
  const reachable = (publicUrl: string) => publicUrl.replace(options.issuer, options.url);
  const asIssuer = `${options.issuer}/demo/as`;
  const mcp = demoMcpServer({
    db: options.db,
    baseUrl: options.issuer,
    asIssuer,
    asJwksUri: `${reachable(asIssuer)}/jwks`,
    ...(options.log ? { log: options.log } : {}),
  });
  const as = demoResourceAs({
    db: options.db,
    baseUrl: options.issuer,
    idpIssuer: options.issuer,
    idpJwksUri: `${options.url}/jwks`,
    clients: [{ client_id: DEMO_AS_CLIENT.clientId, client_secret: DEMO_AS_CLIENT.clientSecret }],
    mcpServers: [{ resource: mcp.resource, scopes: [TODOS_READ, TODOS_WRITE] }],
    ...(options.log ? { log: options.log } : {}),
  });
  if (as.issuer !== asIssuer) throw new Error(`demo wiring: the MCP server trusts ${asIssuer} but the AS is ${as.issuer}`);
  // every other request of the IdP passes with one string comparison, not through the demo's routers
  const base = new URL(options.issuer).pathname.replace(/\/+$/, '');
  const ours = (path: string) => path.startsWith(`${base}/demo/`) || path.startsWith('/.well-known/');
  const middleware: Middleware = (ctx, next) => (ours(ctx.path) ? as(ctx, () => mcp(ctx, next)) : next());
  return { middleware, asIssuer, mcpResource: mcp.resource, resourceMetadataUrl: mcp.resourceMetadataUrl, close: () => mcp.close() };
}
