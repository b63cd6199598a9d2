import {
  Client, CrossAppAccessProvider, discoverAndRequestJwtAuthGrant, discoverAuthorizationServerMetadata, DpopSession,
  requestJwtAuthorizationGrant, StreamableHTTPClientTransport, type CallToolResult, type CrossAppAccessProviderOptions, type FetchLike,
} from '@modelcontextprotocol/client';
import { decodeJwt, type JWTPayload } from 'jose';
import { DEMO_AGENT, DEMO_AS_CLIENT } from './seeded.ts';
import { signIn, type IdpEndpoints } from './sign-in.ts';
import { indent, shorten, tracingFetch, type HttpExchange, type Log } from './trace.ts';

export interface DemoClientOptions {
  /** the IdP's issuer, e.g. http://localhost:3000 */
  issuer: string;
  /** the MCP server to call; default `{issuer}/demo/mcp` */
  mcpUrl?: string | undefined;
  /** the Resource AS the client's `demo-agent-at-todo` credentials belong to; default: the MCP URL's `/demo/as` sibling */
  asIssuer?: string | undefined;
  /** sign in through the login form with these (no browser); both or neither */
  username?: string | undefined;
  password?: string | undefined;
  /** the todo to add */
  todo?: string | undefined;
  /** prove possession of a DPoP key at every step (RFC 9449): the ID-JAG and the access token are bound to it */
  dpop?: boolean | undefined;
  log?: Log | undefined;
  browserTimeoutMs?: number | undefined;
}

export interface ToolCall {
  tool: string;
  text: string;
  structured: unknown;
}

export interface DemoClientResult {
  idToken: JWTPayload;
  idJag: JWTPayload;
  accessToken: JWTPayload;
  calls: ToolCall[];
  /** with `dpop`: the RFC 7638 thumbprint of the client's DPoP key, which the ID-JAG and the access token name */
  dpopJkt?: string;
  /** every HTTP request the client made, in order, unredacted */
  exchanges: HttpExchange[];
}

/** The flow stopped; `step` (1-4) says where, and the message says what to do. */
export class DemoFlowError extends Error {
  readonly step: number;
  readonly exchanges: HttpExchange[];

  constructor(step: number, message: string, exchanges: HttpExchange[]) {
    super(message);
    this.step = step;
    this.exchanges = exchanges;
  }
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

interface Parties {
  issuer: string;
  /** undefined when the client learns it only from the MCP server's metadata (conformance mode) */
  asIssuer: string | undefined;
  mcpUrl: string;
}

/** Labels each request with the step of the flow (docs/protocol.md) it belongs to, from where it goes and what it asks for. */
function stepOf(p: Parties, current: () => number) {
  const idp = new URL(p.issuer);
  const { asIssuer } = p;
  const as = asIssuer === undefined ? undefined : new URL(asIssuer);
  const mcp = new URL(p.mcpUrl);
  return (method: string, url: URL, body: string): string => {
    const href = `${url.origin}${url.pathname}`;
    if (href === p.mcpUrl) {
      return method === 'GET' ? 'step 4 · MCP server (the client offers to listen for server messages; a stateless server declines)' : 'step 4 · MCP server';
    }
    if (url.pathname.startsWith('/.well-known/oauth-protected-resource') && url.origin === mcp.origin) return 'step 3 · where is the MCP server\'s AS? (RFC 9728)';
    const grantType = method === 'POST' ? new URLSearchParams(body).get('grant_type') : null;
    if (grantType === TOKEN_EXCHANGE) return 'step 2 · ID Token for an ID-JAG (RFC 8693 token exchange)';
    if (grantType === JWT_BEARER) return 'step 3 · ID-JAG for an access token (RFC 7523 JWT-bearer)';
    const wellKnown = url.pathname.startsWith('/.well-known/');
    const toAs = asIssuer && as
      ? href.startsWith(asIssuer) || (url.origin === as.origin && wellKnown && url.pathname.endsWith(as.pathname))
      : wellKnown && url.origin !== idp.origin; // the AS is not known yet: metadata that is not the IdP's is the AS's
    if (toAs) return 'step 3 · Resource AS metadata (RFC 8414)';
    if (wellKnown) return `step ${current()} · IdP metadata (RFC 8414)`;
    return 'step 1 · sign-in at the IdP';
  };
}

/** What the person running the demo can do about the usual refusals. */
function hint(step: number, message: string): string {
  if (step === 2 && /invalid_target/.test(message)) {
    return '\n  The IdP\'s policy does not let this user reach the demo MCP server through demo-agent (in the seed, only group'
      + ' engineering may: sign in as alice). Nothing was sent to the Resource AS or the MCP server with a token.';
  }
  if (step === 2 && /invalid_grant/.test(message)) return '\n  The ID Token was refused: it may have expired; run the demo again to sign in afresh.';
  return '';
}

/** One run of the flow: its trace, the step it is at, and how a failure is reported (a DemoFlowError naming the step). */
class Flow {
  step = 1;
  readonly exchanges: HttpExchange[] = [];
  readonly log: Log;
  readonly fetch: FetchLike;
  readonly #hint: typeof hint;

  constructor(log: Log, parties: Parties, hints: typeof hint = () => '') {
    this.log = log;
    this.#hint = hints;
    this.fetch = tracingFetch(log, stepOf(parties, () => this.step), this.exchanges);
  }

  readonly fail = (err: unknown): never => {
    if (err instanceof DemoFlowError) throw err;
    let message = (err as Error).message ?? String(err);
    // the SDK's OAuthError keeps the OAuth error code (invalid_client...) out of its message
    const { code } = err as { code?: unknown };
    if (typeof code === 'string' && /^[a-z_]+$/.test(code) && !message.includes(code)) message = `${code}: ${message}`;
    throw new DemoFlowError(this.step, `step ${this.step} failed: ${message}${this.#hint(this.step, message)}`, this.exchanges);
  };
}

function heading(log: Log, title: string, ...explanation: string[]) {
  log('');
  log(`== ${title} ${'='.repeat(Math.max(3, 100 - title.length))}`);
  for (const line of explanation) log(`  ${line}`);
}

function toolText(result: CallToolResult): string {
  return result.content.map((c) => (c.type === 'text' ? c.text : `(${c.type} content)`)).join('\n');
}

/** What steps 2 to 4 need, however the client got its ID Token. */
interface Grant {
  /** the ID Token to exchange */
  idToken: string;
  /** the IdP, by its issuer (the token endpoint is discovered, RFC 8414) or by its token endpoint */
  idp: { issuer: string } | { tokenEndpoint: string };
  /** the client at the IdP; without a secret it sends only its client_id */
  idpClient: { clientId: string; clientSecret?: string | undefined };
  /** the client at the Resource AS (client_secret_basic there) */
  asClient: { clientId: string; clientSecret: string };
  /** the client's DPoP key, when it proves possession of one */
  dpop?: DpopSession | undefined;
}

/**
 * The official client's provider, with a DPoP key: the SDK then sends a proof with the JWT-bearer request to the
 * Resource AS (and retries with its nonce), and presents a DPoP-bound access token with the DPoP scheme and a
 * proof per request (RFC 9449 §5, §7).
 */
class DpopCrossAppAccessProvider extends CrossAppAccessProvider {
  readonly #session: DpopSession;

  constructor(options: CrossAppAccessProviderOptions, session: DpopSession) {
    super(options);
    this.#session = session;
  }

  dpop(): DpopSession {
    return this.#session;
  }
}

/**
 * The SDK signs its own token requests with the provider's DPoP key, but not the ID-JAG request to the IdP: this
 * fetch adds the proof to that POST (RFC 9449 §5, with `htu` the IdP's token endpoint), and retries once with
 * the IdP's nonce when it asks for one (§8), as the SDK does at the Resource AS.
 */
function withExchangeProof(session: DpopSession, fetchFn: FetchLike): FetchLike {
  return async (url, init) => {
    if ((init?.method ?? 'GET').toUpperCase() !== 'POST') return fetchFn(url, init);
    const send = async () => {
      const headers = new Headers(init?.headers);
      headers.set('DPoP', await session.buildProof({ htm: 'POST', htu: String(url) }));
      return fetchFn(url, { ...init, headers });
    };
    let res = await send();
    if (res.status === 400 && (await res.clone().json().catch(() => ({})) as { error?: unknown }).error === 'use_dpop_nonce') {
      session.observeNonce(res, String(url));
      res = await send();
    }
    session.observeNonce(res, String(url));
    return res;
  };
}

/** The connected MCP client, for step 4. */
interface Session {
  client: Client;
  /** calls a tool, prints its result, and fails the flow if the tool reports an error */
  call(tool: string, args?: Record<string, unknown>): Promise<ToolCall>;
}

/**
 * Steps 2 to 4 with the official MCP client: its transport meets the MCP server's 401, finds the Resource AS through
 * RFC 9728 metadata, and lets `CrossAppAccessProvider` trade an ID-JAG (requested from the IdP in its assertion
 * callback) for an access token; then `use` talks to the MCP server.
 */
async function connectWithIdJag(flow: Flow, p: Parties, g: Grant, use: (session: Session) => Promise<void>) {
  const { log } = flow;
  heading(log, `Steps 2-4 · Connect to the MCP server ${p.mcpUrl}`,
    'With the official MCP client: StreamableHTTPClientTransport + CrossAppAccessProvider. The first request has no token;',
    'the 401 names the protected resource metadata, which names the Resource AS. The provider then asks the IdP for an',
    'ID-JAG (step 2), trades it at the Resource AS for an access token (step 3), and the transport retries (step 4).');
  if (g.dpop) {
    log(`  With DPoP (RFC 9449): every request of steps 2 to 4 carries a proof by the client's ${g.dpop.alg} key, thumbprint`
      + ` ${g.dpop.thumbprint}; the ID-JAG and the access token name that key (cnf.jkt).`);
  }
  flow.step = 4;
  let idJag: string | undefined;
  const options: CrossAppAccessProviderOptions = {
    clientId: g.asClient.clientId,
    clientSecret: g.asClient.clientSecret,
    clientName: 'idjag demo client',
    // these credentials were issued by this AS: the SDK refuses to send them to another one
    expectedIssuer: p.asIssuer,
    fetchFn: flow.fetch,
    assertion: async (ctx) => {
      flow.step = 2;
      log('');
      log(`  The MCP server's AS is ${ctx.authorizationServerUrl}; asking the IdP for an ID-JAG for resource ${ctx.resourceUrl}`
        + ` with scope "${ctx.scope ?? '(none)'}":`);
      const request = {
        audience: ctx.authorizationServerUrl,
        resource: ctx.resourceUrl,
        idToken: g.idToken,
        clientId: g.idpClient.clientId,
        ...(g.idpClient.clientSecret !== undefined ? { clientSecret: g.idpClient.clientSecret } : {}),
        ...(ctx.scope ? { scope: ctx.scope } : {}),
        fetchFn: g.dpop ? withExchangeProof(g.dpop, ctx.fetchFn) : ctx.fetchFn,
      };
      const grant = 'issuer' in g.idp
        ? await discoverAndRequestJwtAuthGrant({ ...request, idpUrl: g.idp.issuer })
        : await requestJwtAuthorizationGrant({ ...request, tokenEndpoint: g.idp.tokenEndpoint });
      idJag = grant.jwtAuthGrant;
      flow.step = 3;
      log('');
      log(`  Got the ID-JAG; the provider now presents it to the Resource AS (client_secret_basic, its own credentials there${g.dpop ? ', and a DPoP proof by the same key' : ''}):`);
      return grant.jwtAuthGrant;
    },
  };
  const provider = g.dpop ? new DpopCrossAppAccessProvider(options, g.dpop) : new CrossAppAccessProvider(options);
  // a failure after the access token was obtained is the MCP server's (step 4), not the AS's. The transport lends
  // this fetch to the SDK's auth() too: the JWT-bearer grant (Basic, to the AS) goes through here as well
  const toMcp: FetchLike = (url, init) => {
    const authorization = new Headers(init?.headers).get('authorization');
    if (/^(bearer|dpop) /i.test(authorization ?? '') && new URL(String(url)).origin === new URL(p.mcpUrl).origin) flow.step = 4;
    return flow.fetch(url, init);
  };
  const transport = new StreamableHTTPClientTransport(new URL(p.mcpUrl), { authProvider: provider, fetch: toMcp });
  const client = new Client({ name: 'idjag-demo-client', version: '0.1.0' });
  const calls: ToolCall[] = [];
  try {
    await client.connect(transport).catch(flow.fail);
    flow.step = 4;
    const call = async (tool: string, args: Record<string, unknown> = {}) => {
      const result = await client.callTool({ name: tool, arguments: args }) as CallToolResult;
      const text = toolText(result);
      if (result.isError) throw new DemoFlowError(4, `the MCP server's ${tool} tool failed: ${text}`, flow.exchanges);
      heading(log, `Result of ${tool}`);
      log(indent(text, '  '));
      const done = { tool, text, structured: result.structuredContent };
      calls.push(done);
      return done;
    };
    heading(log, 'Step 4 · Call the tools', 'The transport now sends the access token with every request.');
    await use({ client, call }).catch(flow.fail);
  } finally {
    await client.close().catch(() => undefined);
  }
  const accessToken = provider.tokens()?.access_token;
  if (!idJag || !accessToken) throw new DemoFlowError(flow.step, 'the MCP client connected without getting an ID-JAG and an access token', flow.exchanges);
  return { idJag, accessToken, calls };
}

/**
 * The demo MCP client: the flow's steps 1 to 4 (docs/protocol.md) against idjag and its demo parties, printing each request
 * and answer. Step 1 is plain OpenID Connect; steps 2 to 4 are the official MCP client's (`connectWithIdJag`),
 * with `discoverAndRequestJwtAuthGrant` as the assertion callback.
 */
export async function runDemoClient(options: DemoClientOptions): Promise<DemoClientResult> {
  const log = options.log ?? (() => undefined);
  const issuer = options.issuer.replace(/\/+$/, '');
  const mcpUrl = options.mcpUrl ?? `${issuer}/demo/mcp`;
  const asIssuer = options.asIssuer ?? mcpUrl.replace(/\/demo\/mcp$/, '/demo/as');
  if ((options.username === undefined) !== (options.password === undefined)) {
    throw new DemoFlowError(1, 'give both --username and --password, or neither (to sign in through the browser)', []);
  }
  const parties = { issuer, asIssuer, mcpUrl };
  const flow = new Flow(log, parties, hint);
  // one key for the whole run: the official client's DPoP session (a fresh, non-extractable ES256 key)
  const dpop = options.dpop ? await DpopSession.create() : undefined;

  heading(log, `Step 1 · Sign in at the IdP ${issuer}`,
    `OpenID Connect authorization code flow with PKCE, as client ${DEMO_AGENT.clientId}. The client keeps the ID Token.`);
  const idp = await idpEndpoints(issuer, flow.fetch).catch(flow.fail);
  const signedIn = await signIn({
    idp, clientId: DEMO_AGENT.clientId, clientSecret: DEMO_AGENT.clientSecret, redirectUri: DEMO_AGENT.redirectUri,
    scope: 'openid email profile', fetch: flow.fetch, log, browserTimeoutMs: options.browserTimeoutMs,
    credentials: options.username !== undefined ? { username: options.username, password: options.password! } : undefined,
  }).catch(flow.fail);
  log('');
  log(`  Signed in: the ID Token's subject is ${String(signedIn.claims.sub)} (verified: signature, iss, aud, nonce).`);

  const { idJag, accessToken, calls } = await connectWithIdJag(flow, parties, {
    idToken: signedIn.idToken,
    idp: { issuer },
    idpClient: { clientId: DEMO_AGENT.clientId, clientSecret: DEMO_AGENT.clientSecret },
    asClient: { clientId: DEMO_AS_CLIENT.clientId, clientSecret: DEMO_AS_CLIENT.clientSecret },
    dpop,
  }, async ({ call }) => {
    await call('list_todos');
    await call('add_todo', { text: options.todo ?? 'Try the whole Enterprise-Managed Authorization flow' });
    await call('list_todos');
  });
  heading(log, 'Done', 'The tools saw the user the IdP signed in: the ID-JAG\'s sub and email, carried into the access token.',
    ...(dpop ? [`Both tokens were bound to the client's DPoP key (cnf.jkt ${dpop.thumbprint}): copied without the key, neither is of any use.`] : []));
  return {
    idToken: signedIn.claims, idJag: decodeJwt(idJag), accessToken: decodeJwt(accessToken), calls, exchanges: flow.exchanges,
    ...(dpop ? { dpopJkt: dpop.thumbprint } : {}),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Conformance mode: the MCP project's conformance suite (`@modelcontextprotocol/conformance`, client scenario
// auth/cross-app-access-complete-flow) plays IdP, Resource AS and MCP server, and hands the client step 1's results.

/** `MCP_CONFORMANCE_CONTEXT` of the scenario auth/cross-app-access-complete-flow (the suite adds `name`). */
export interface ConformanceContext {
  /** the IdP that issued the ID Token */
  idp_issuer: string;
  /** where to exchange it (no discovery) */
  idp_token_endpoint: string;
  /** the ID Token, as if step 1 had run */
  idp_id_token: string;
  /** the client's id at the IdP (the context gives no secret for it) */
  idp_client_id: string;
  /** the client's credentials at the MCP server's AS */
  client_id: string;
  client_secret: string;
}

const CONTEXT_FIELDS = ['idp_issuer', 'idp_token_endpoint', 'idp_id_token', 'idp_client_id', 'client_id', 'client_secret'] as const;

/** Reads `MCP_CONFORMANCE_CONTEXT`; a DemoFlowError (step 1, which the context replaces) says what is missing. */
export function parseConformanceContext(raw: string | undefined): ConformanceContext {
  const fail = (why: string): never => {
    throw new DemoFlowError(1, `conformance mode needs MCP_CONFORMANCE_CONTEXT, the JSON the conformance suite passes (${CONTEXT_FIELDS.join(', ')}): ${why}`, []);
  };
  if (!raw) return fail('it is not set');
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    return fail(`it is not JSON (${(err as Error).message})`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return fail('it is not a JSON object');
  const context = parsed as Record<string, unknown>;
  const missing = CONTEXT_FIELDS.filter((k) => typeof context[k] !== 'string' || context[k] === '');
  if (missing.length) return fail(`${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} missing or not a non-empty string`);
  return Object.fromEntries(CONTEXT_FIELDS.map((k) => [k, context[k]])) as unknown as ConformanceContext;
}

export interface ConformanceClientResult {
  /** the context's ID Token, decoded (not verified: the suite's IdP verifies it in step 2) */
  idToken: JWTPayload;
  idJag: JWTPayload;
  /** as the AS issued it (the suite's AS issues opaque tokens) */
  accessToken: string;
  /** the MCP server's tools, as listed with the access token */
  tools: string[];
  exchanges: HttpExchange[];
}

/**
 * Steps 2 to 4 of the demo client against the MCP server at `mcpUrl`, with step 1's results taken from the
 * conformance suite's context: the same `connectWithIdJag` as the demo, the IdP's token endpoint given rather
 * than discovered; step 4 lists the MCP server's tools.
 */
export async function runConformanceClient(context: ConformanceContext, mcpUrl: string, options: { log?: Log | undefined } = {}): Promise<ConformanceClientResult> {
  const log = options.log ?? (() => undefined);
  // the context does not say which AS issued client_id/client_secret: the one the MCP server's metadata names gets them
  const parties = { issuer: context.idp_issuer, asIssuer: undefined, mcpUrl };
  const flow = new Flow(log, parties);

  heading(log, 'Step 1 · Given by the conformance suite (MCP_CONFORMANCE_CONTEXT)',
    'No sign-in: the context holds the ID Token the IdP issued to the client, the IdP\'s token endpoint, and the client\'s',
    'credentials at the IdP and at the MCP server\'s AS. It names no AS, so the credentials go to the AS the MCP server\'s',
    'metadata names (the SDK warns that expectedIssuer is omitted; the demo pins it).');
  let idToken: JWTPayload;
  try {
    idToken = decodeJwt(context.idp_id_token);
  } catch (err) {
    throw new DemoFlowError(1, `the context's idp_id_token is not a JWT: ${(err as Error).message}`, []);
  }
  log(`  IdP ${context.idp_issuer}, token endpoint ${context.idp_token_endpoint}`);
  log(`  client ${context.idp_client_id} at the IdP (no secret), ${context.client_id} at the MCP server's AS`);
  log(`  ID Token ${shorten(context.idp_id_token)}, decoded (the IdP verifies it in step 2):`);
  log(indent(`claims ${JSON.stringify(idToken, null, 2)}`, '    '));

  let tools: string[] = [];
  const { idJag, accessToken } = await connectWithIdJag(flow, parties, {
    idToken: context.idp_id_token,
    idp: { tokenEndpoint: context.idp_token_endpoint },
    idpClient: { clientId: context.idp_client_id },
    asClient: { clientId: context.client_id, clientSecret: context.client_secret },
  }, async ({ client }) => {
    tools = (await client.listTools()).tools.map((t) => t.name);
    heading(log, 'Result of tools/list');
    log(`  ${tools.length} tool(s): ${tools.join(', ') || '(none)'}`);
  });
  let idJagClaims: JWTPayload;
  try {
    idJagClaims = decodeJwt(idJag);
  } catch (err) {
    throw new DemoFlowError(2, `the ID-JAG from the IdP is not a JWT: ${(err as Error).message}`, flow.exchanges);
  }
  heading(log, 'Done', 'The MCP server accepted the access token the AS issued for the ID-JAG: steps 2 to 4 passed.');
  return { idToken, idJag: idJagClaims, accessToken, tools, exchanges: flow.exchanges };
}

/** RFC 8414 metadata first (where the MCP client looks too), then OpenID Connect Discovery, via the official client. */
async function idpEndpoints(issuer: string, fetchFn: FetchLike): Promise<IdpEndpoints> {
  const metadata = await discoverAuthorizationServerMetadata(issuer, { fetchFn });
  if (!metadata) throw new Error(`no authorization server metadata at ${issuer}/.well-known/oauth-authorization-server or openid-configuration: is idjag running there?`);
  const { authorization_endpoint: authorization, token_endpoint: token, jwks_uri: jwks } = metadata as Record<string, unknown>;
  if (typeof authorization !== 'string' || typeof token !== 'string' || typeof jwks !== 'string') {
    throw new Error(`the metadata of ${issuer} lacks authorization_endpoint, token_endpoint or jwks_uri`);
  }
  return { issuer: metadata.issuer, authorization_endpoint: authorization, token_endpoint: token, jwks_uri: jwks };
}
