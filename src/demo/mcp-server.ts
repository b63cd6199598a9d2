import type { IncomingMessage } from 'node:http';
import { toNodeHandler } from '@modelcontextprotocol/node';
import {
  createMcpHandler, McpServer, OAuthError, OAuthErrorCode, requireScopes, validateOriginHeader, type AuthInfo,
} from '@modelcontextprotocol/server';
import { createRemoteJWKSet } from 'jose';
import type { Context, Middleware } from 'koa';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { DB } from '../db/index.ts';
import { verifyAccessToken, type AccessTokenTrust, type Caller } from './access-token.ts';
import { TodoStore, type Todo } from './todos.ts';

export const TODOS_READ = 'todos.read';
export const TODOS_WRITE = 'todos.write';
const SCOPES = [TODOS_READ, TODOS_WRITE];

export interface DemoMcpServerOptions {
  /** storage for the todo lists (`demo_todos`); migrated by the caller */
  db: DB;
  /** origin (optionally with a path) the routes are served under; the resource is `{baseUrl}/demo/mcp` */
  baseUrl: string;
  /** the one authorization server whose access tokens it accepts, named in its protected resource metadata */
  asIssuer: string;
  /** that AS's JWKS */
  asJwksUri: string;
  /** clock skew tolerated on the access token's `exp`/`iat`, seconds, default 30 */
  clockSkew?: number;
  log?: Pick<Logger, 'error' | 'debug'>;
}

export type DemoMcpServer = Middleware & {
  /** RFC 9728 resource identifier: what a client asks tokens for, and the `aud` it accepts */
  resource: string;
  /** where its protected resource metadata is served (RFC 9728 §3.1, path inserted after the well-known prefix) */
  resourceMetadataUrl: string;
  close(): Promise<void>;
};

/**
 * The demo MCP server: a todo list per user over Streamable HTTP (the official SDK's `createMcpHandler`),
 * protected by access tokens of the demo Resource AS. Mount the returned middleware on an app that sees full
 * request paths and parses no bodies on them:
 *
 *   GET  /.well-known/oauth-protected-resource{resource path}   RFC 9728 metadata naming the AS
 *   *    {resource}                                              MCP, Bearer token required
 */
export function demoMcpServer(options: DemoMcpServerOptions): DemoMcpServer {
  const resource = `${options.baseUrl.replace(/\/+$/, '')}/demo/mcp`;
  const path = new URL(resource).pathname;
  const metadataPath = `/.well-known/oauth-protected-resource${path}`;
  const resourceMetadataUrl = new URL(metadataPath, resource).href;
  const trust: AccessTokenTrust = {
    asIssuer: options.asIssuer,
    asKeys: createRemoteJWKSet(new URL(options.asJwksUri)),
    resource,
    skew: options.clockSkew ?? 30,
  };
  const challenge = new Challenges(resourceMetadataUrl);
  const todos = new TodoStore(options.db);
  const onerror = (err: Error) => options.log?.debug({ err }, 'demo MCP server: request rejected or failed');
  // One server instance per request, built for the caller the gate authenticated (stateless serving).
  const handler = createMcpHandler(({ authInfo }) => todoServer(todos, callerOf(authInfo)), { onerror });
  const serve = toNodeHandler(handler, { onerror: (err) => options.log?.error({ err }, 'demo MCP server failed') });
  const metadata = {
    resource,
    authorization_servers: [options.asIssuer],
    scopes_supported: SCOPES,
    bearer_methods_supported: ['header'],
    resource_name: 'idjag demo todo MCP server',
  };

  const middleware: Middleware = async (ctx, next) => {
    if (ctx.path === metadataPath) return protectedResourceMetadata(ctx, metadata);
    if (ctx.path !== path) return next();
    if (!originAllowed(ctx, resource)) return;
    const authInfo = await authenticate(ctx, trust, challenge, options.log);
    if (!authInfo) return;
    // The SDK answers on the raw Node response (JSON or an SSE stream) and reads the body itself.
    ctx.respond = false;
    (ctx.req as IncomingMessage & { auth?: AuthInfo }).auth = authInfo;
    await serve(ctx.req, ctx.res);
  };
  return Object.assign(middleware, { resource, resourceMetadataUrl, close: () => handler.close() });
}

/** RFC 9728 §3: public, so any origin may read it (browser-based clients discover the AS here too). */
function protectedResourceMetadata(ctx: Context, metadata: object) {
  if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
    ctx.status = 405;
    ctx.set('Allow', 'GET, HEAD');
    return;
  }
  ctx.set('Access-Control-Allow-Origin', '*');
  ctx.set('Cache-Control', 'public, max-age=300');
  ctx.body = metadata;
}

/**
 * The MCP transport spec requires Origin validation against DNS rebinding. Non-browser clients send no
 * Origin; a browser page may call only from the server's own host.
 */
function originAllowed(ctx: Context, resource: string): boolean {
  const result = validateOriginHeader(ctx.get('origin') || undefined, [new URL(resource).hostname]);
  if (result.ok) return true;
  ctx.status = 403;
  ctx.body = { error: 'forbidden', error_description: `requests from origin ${ctx.get('origin')} are not allowed` };
  return false;
}

/** RFC 6750 §3 challenges, always naming the protected resource metadata (RFC 9728 §5.1): clients find the AS there. */
class Challenges {
  readonly #metadataUrl: string;

  constructor(metadataUrl: string) {
    this.#metadataUrl = metadataUrl;
  }

  /** §3.1: a request without credentials gets no error code, only where to get some and for which scopes. */
  missing(): string {
    return `Bearer resource_metadata="${this.#metadataUrl}", scope="${SCOPES.join(' ')}"`;
  }

  failed(error: string, description: string): string {
    // RFC 6750 §3: error_description allows neither '"' nor '\\', even escaped
    const quoted = description.replaceAll(/["\\]/g, "'").replaceAll(/[^\x20-\x7e]/g, ' ');
    return `Bearer error="${error}", error_description="${quoted}", resource_metadata="${this.#metadataUrl}"`;
  }
}

/**
 * The gate in front of every MCP request: a valid access token for this resource, or the answer RFC 6750
 * prescribes. Scopes are checked per tool (each tool's scope challenge), so a read-only token still lists.
 */
async function authenticate(ctx: Context, trust: AccessTokenTrust, challenge: Challenges, log: DemoMcpServerOptions['log']): Promise<AuthInfo | undefined> {
  ctx.set('Cache-Control', 'no-store');
  const header = ctx.get('authorization');
  if (!header) {
    ctx.status = 401;
    ctx.set('WWW-Authenticate', challenge.missing());
    ctx.body = { error_description: `this MCP server needs a Bearer access token from ${trust.asIssuer}; see the resource_metadata in WWW-Authenticate` };
    return undefined;
  }
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  if (!m) {
    const description = 'the Authorization header is not "Bearer <access token>" (RFC 6750 section 2.1)';
    ctx.status = 400;
    ctx.set('WWW-Authenticate', challenge.failed('invalid_request', description));
    ctx.body = { error: 'invalid_request', error_description: description };
    return undefined;
  }
  try {
    return await verifyAccessToken(m[1]!, trust);
  } catch (err) {
    if (err instanceof OAuthError && err.code === OAuthErrorCode.InvalidToken) {
      ctx.status = 401;
      ctx.set('WWW-Authenticate', challenge.failed(err.code, err.message));
      ctx.body = { error: err.code, error_description: err.message };
      return undefined;
    }
    if (err instanceof OAuthError && err.code === OAuthErrorCode.TemporarilyUnavailable) {
      ctx.status = 503;
      ctx.set('Retry-After', '5');
      ctx.body = { error: err.code, error_description: err.message };
      return undefined;
    }
    log?.error({ err }, 'demo MCP server: access token check failed');
    ctx.status = 500;
    ctx.body = { error: 'server_error', error_description: 'the access token could not be checked; the error has been logged' };
    return undefined;
  }
}

function callerOf(authInfo: AuthInfo | undefined): Caller {
  const caller = authInfo?.extra?.caller as Caller | undefined;
  // the gate runs before every request; reaching here without it is a wiring bug, not a client error
  if (!caller) throw new Error('demo MCP server: a request reached the tools without an authenticated caller');
  return caller;
}

function describe(caller: Caller): string {
  return `${caller.email ?? '(no email in the token)'} (sub ${caller.sub}, via client ${caller.clientId})`;
}

function listing(todos: Todo[]): string {
  return todos.length ? todos.map((t, i) => `${i + 1}. ${t.text}`).join('\n') : '(empty)';
}

/** The tools, for one caller. Results name the caller: the point of the demo is to see who arrived. */
function todoServer(todos: TodoStore, caller: Caller): McpServer {
  const server = new McpServer({ name: 'idjag-demo-todos', version: '1.0.0' });
  const who = { sub: caller.sub, email: caller.email ?? null, client_id: caller.clientId };

  server.registerTool('list_todos', {
    title: 'List todos',
    description: `List the signed-in user's todo items (needs scope ${TODOS_READ}).`,
    annotations: { readOnlyHint: true },
    scopeChallenge: requireScopes(TODOS_READ),
  }, async () => {
    const items = await todos.list(caller.sub);
    return {
      content: [{ type: 'text', text: `Todo list of ${describe(caller)}, ${items.length} item(s):\n${listing(items)}` }],
      structuredContent: { caller: who, todos: items },
    };
  });

  server.registerTool('add_todo', {
    title: 'Add a todo',
    description: `Add an item to the signed-in user's todo list (needs scope ${TODOS_WRITE}).`,
    inputSchema: z.object({ text: z.string().trim().min(1).max(500).describe('what to do') }),
    scopeChallenge: requireScopes(TODOS_WRITE),
  }, async ({ text }) => {
    const todo = await todos.add(caller.sub, text, caller.clientId);
    const count = (await todos.list(caller.sub)).length;
    return {
      content: [{ type: 'text', text: `Added "${todo.text}" to the todo list of ${describe(caller)}; it now has ${count} item(s).` }],
      structuredContent: { caller: who, added: todo, count },
    };
  });

  return server;
}
