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
import { DPOP_ALGS, DpopProofError, replayKeepUntil, replayKey, singleProof, verifyDpopProof } from '../dpop/proof.ts';
import { verifyAccessToken, type AccessTokenTrust, type Caller } from './access-token.ts';
import { JtiStore } from './store.ts';
import { TodoStore, type Todo } from './todos.ts';

/** DPoP proofs are made right before their request (RFC 9449 §11.1): older ones are refused. */
const PROOF_MAX_AGE = 60;

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
  const proofs: ProofCheck = { resource, skew: trust.skew, seen: new JtiStore(options.db, trust.skew) };
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
    // RFC 9728 §2: DPoP-bound tokens are accepted (and Bearer ones too)
    dpop_signing_alg_values_supported: DPOP_ALGS,
    dpop_bound_access_tokens_required: false,
  };

  const middleware: Middleware = async (ctx, next) => {
    if (ctx.path === metadataPath) return protectedResourceMetadata(ctx, metadata);
    if (ctx.path !== path) return next();
    if (!originAllowed(ctx, resource)) return;
    const authInfo = await authenticate(ctx, trust, proofs, challenge, options.log);
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

  failed(error: string, description: string, scheme: 'Bearer' | 'DPoP' = 'Bearer'): string {
    // RFC 6750 §3: error_description allows neither '"' nor '\\', even escaped
    const quoted = description.replaceAll(/["\\]/g, "'").replaceAll(/[^\x20-\x7e]/g, ' ');
    // RFC 9449 §7.1: a DPoP challenge names the algorithms a proof may use
    const algs = scheme === 'DPoP' ? `, algs="${DPOP_ALGS.join(' ')}"` : '';
    return `${scheme} error="${error}", error_description="${quoted}"${algs}, resource_metadata="${this.#metadataUrl}"`;
  }
}

/** What a DPoP-bound token's proof is checked against: this resource, and the proofs already seen (replay). */
interface ProofCheck {
  resource: string;
  skew: number;
  seen: JtiStore;
}

/** A request the gate refuses: the status, the OAuth error and the challenge scheme it answers with. */
class Refusal extends Error {
  readonly status: number;
  readonly error: string;
  readonly scheme: 'Bearer' | 'DPoP';

  constructor(error: string, description: string, scheme: 'Bearer' | 'DPoP', status = 401) {
    super(description);
    this.error = error;
    this.scheme = scheme;
    this.status = status;
  }
}

/**
 * RFC 9449 §7: a DPoP-bound token comes with the DPoP scheme and a proof by its key, made for this request
 * (method, URI, the token's hash in `ath`) and never seen before; a bound token sent as a Bearer token is
 * refused, since whoever holds it without the key must not be able to use it (§7.1, the draft §9.8.1.2).
 */
async function checkPossession(ctx: Context, scheme: 'Bearer' | 'DPoP', token: string, caller: Caller, proofs: ProofCheck): Promise<void> {
  if (scheme === 'Bearer') {
    if (caller.jkt !== undefined) {
      throw new Refusal('invalid_token', 'this access token is DPoP-bound: present it as "Authorization: DPoP <token>" with a DPoP proof signed by its key (RFC 9449 section 7.1)', 'DPoP');
    }
    return;
  }
  if (caller.jkt === undefined) throw new Refusal('invalid_token', 'this access token is not DPoP-bound: present it as "Authorization: Bearer <token>"', 'Bearer');
  const now = Math.floor(Date.now() / 1000);
  let proof;
  try {
    const header = singleProof(ctx.req.headersDistinct.dpop);
    if (header === undefined) throw new DpopProofError('the DPoP header is missing: a DPoP-bound token comes with a proof signed by its key');
    proof = await verifyDpopProof(header, { htm: ctx.method, htu: proofs.resource, now, maxAge: PROOF_MAX_AGE, skew: proofs.skew, accessToken: token });
  } catch (err) {
    if (err instanceof DpopProofError) throw new Refusal(err.error, err.message, 'DPoP');
    throw err;
  }
  if (proof.jkt !== caller.jkt) throw new Refusal('invalid_token', 'the DPoP proof is signed by another key than the one this access token is bound to', 'DPoP');
  if (!(await proofs.seen.firstUse(`mcp-dpop:${replayKey(proof)}`, replayKeepUntil(proof, PROOF_MAX_AGE), now))) {
    throw new Refusal('invalid_dpop_proof', 'this DPoP proof was already used; sign a new proof for every request', 'DPoP');
  }
}

/**
 * The gate in front of every MCP request: a valid access token for this resource, or the answer RFC 6750
 * prescribes. Scopes are checked per tool (each tool's scope challenge), so a read-only token still lists.
 */
async function authenticate(ctx: Context, trust: AccessTokenTrust, proofs: ProofCheck, challenge: Challenges, log: DemoMcpServerOptions['log']): Promise<AuthInfo | undefined> {
  ctx.set('Cache-Control', 'no-store');
  const header = ctx.get('authorization');
  if (!header) {
    ctx.status = 401;
    ctx.set('WWW-Authenticate', challenge.missing());
    ctx.body = { error_description: `this MCP server needs a Bearer access token from ${trust.asIssuer}; see the resource_metadata in WWW-Authenticate` };
    return undefined;
  }
  const m = /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  if (!m) {
    const description = 'the Authorization header is not "Bearer <access token>" (RFC 6750 section 2.1) or "DPoP <access token>" (RFC 9449 section 7.1)';
    ctx.status = 400;
    ctx.set('WWW-Authenticate', challenge.failed('invalid_request', description));
    ctx.body = { error: 'invalid_request', error_description: description };
    return undefined;
  }
  const scheme = m[1]!.toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer';
  const token = m[2]!;
  try {
    const authInfo = await verifyAccessToken(token, trust);
    await checkPossession(ctx, scheme, token, callerOf(authInfo), proofs);
    return authInfo;
  } catch (err) {
    if (err instanceof Refusal) {
      ctx.status = err.status;
      ctx.set('WWW-Authenticate', challenge.failed(err.error, err.message, err.scheme));
      ctx.body = { error: err.error, error_description: err.message };
      return undefined;
    }
    if (err instanceof OAuthError && err.code === OAuthErrorCode.InvalidToken) {
      ctx.status = 401;
      ctx.set('WWW-Authenticate', challenge.failed(err.code, err.message, scheme));
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
