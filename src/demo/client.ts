import {
  Client, CrossAppAccessProvider, discoverAndRequestJwtAuthGrant, discoverAuthorizationServerMetadata,
  StreamableHTTPClientTransport, type CallToolResult, type FetchLike,
} from '@modelcontextprotocol/client';
import { decodeJwt, type JWTPayload } from 'jose';
import { DEMO_AGENT, DEMO_AS_CLIENT } from './seeded.ts';
import { signIn, type IdpEndpoints } from './sign-in.ts';
import { indent, tracingFetch, type HttpExchange, type Log } from './trace.ts';

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

interface Parties {
  issuer: string;
  asIssuer: string;
  mcpUrl: string;
}

/** Labels each request with the step of SPEC.md's flow it belongs to, from where it goes. */
function stepOf(p: Parties, current: () => number) {
  const as = new URL(p.asIssuer);
  const mcp = new URL(p.mcpUrl);
  return (method: string, url: URL, body: string): string => {
    const href = `${url.origin}${url.pathname}`;
    if (href === p.mcpUrl) {
      return method === 'GET' ? 'step 4 · MCP server (the client offers to listen for server messages; a stateless server declines)' : 'step 4 · MCP server';
    }
    if (url.pathname.startsWith('/.well-known/oauth-protected-resource') && url.origin === mcp.origin) return 'step 3 · where is the MCP server\'s AS? (RFC 9728)';
    if (href.startsWith(p.asIssuer) || (url.origin === as.origin && url.pathname.startsWith('/.well-known/') && url.pathname.endsWith(as.pathname))) {
      return href === `${p.asIssuer}/token` ? 'step 3 · ID-JAG for an access token (RFC 7523 JWT-bearer)' : 'step 3 · Resource AS metadata (RFC 8414)';
    }
    if (method === 'POST' && new URLSearchParams(body).get('grant_type') === TOKEN_EXCHANGE) return 'step 2 · ID Token for an ID-JAG (RFC 8693 token exchange)';
    if (url.pathname.startsWith('/.well-known/')) return `step ${current()} · IdP metadata (RFC 8414)`;
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

function heading(log: Log, title: string, ...explanation: string[]) {
  log('');
  log(`== ${title} ${'='.repeat(Math.max(3, 100 - title.length))}`);
  for (const line of explanation) log(`  ${line}`);
}

function toolText(result: CallToolResult): string {
  return result.content.map((c) => (c.type === 'text' ? c.text : `(${c.type} content)`)).join('\n');
}

/**
 * The demo MCP client: SPEC.md's steps 1 to 4 against idjag and its demo parties, printing each request
 * and answer. Step 1 is plain OpenID Connect; steps 2 to 4 are the official MCP client's: its transport
 * meets the MCP server's 401, finds the Resource AS through RFC 9728 metadata, and lets
 * `CrossAppAccessProvider` get an access token with an ID-JAG from `discoverAndRequestJwtAuthGrant`.
 */
export async function runDemoClient(options: DemoClientOptions): Promise<DemoClientResult> {
  const log = options.log ?? (() => undefined);
  const issuer = options.issuer.replace(/\/+$/, '');
  const mcpUrl = options.mcpUrl ?? `${issuer}/demo/mcp`;
  const asIssuer = options.asIssuer ?? mcpUrl.replace(/\/demo\/mcp$/, '/demo/as');
  if ((options.username === undefined) !== (options.password === undefined)) {
    throw new DemoFlowError(1, 'give both --username and --password, or neither (to sign in through the browser)', []);
  }
  const exchanges: HttpExchange[] = [];
  let step = 1;
  const traced = tracingFetch(log, stepOf({ issuer, asIssuer, mcpUrl }, () => step), exchanges);
  const fail = (err: unknown): never => {
    if (err instanceof DemoFlowError) throw err;
    const message = (err as Error).message ?? String(err);
    throw new DemoFlowError(step, `step ${step} failed: ${message}${hint(step, message)}`, exchanges);
  };

  heading(log, `Step 1 · Sign in at the IdP ${issuer}`,
    `OpenID Connect authorization code flow with PKCE, as client ${DEMO_AGENT.clientId}. The client keeps the ID Token.`);
  const idp = await idpEndpoints(issuer, traced).catch(fail);
  const signedIn = await signIn({
    idp, clientId: DEMO_AGENT.clientId, clientSecret: DEMO_AGENT.clientSecret, redirectUri: DEMO_AGENT.redirectUri,
    scope: 'openid email profile', fetch: traced, log, browserTimeoutMs: options.browserTimeoutMs,
    credentials: options.username !== undefined ? { username: options.username, password: options.password! } : undefined,
  }).catch(fail);
  log('');
  log(`  Signed in: the ID Token's subject is ${String(signedIn.claims.sub)} (verified: signature, iss, aud, nonce).`);

  heading(log, `Steps 2-4 · Connect to the MCP server ${mcpUrl}`,
    'With the official MCP client: StreamableHTTPClientTransport + CrossAppAccessProvider. The first request has no token;',
    'the 401 names the protected resource metadata, which names the Resource AS. The provider then asks the IdP for an',
    'ID-JAG (step 2), trades it at the Resource AS for an access token (step 3), and the transport retries (step 4).');
  step = 4;
  let idJag: string | undefined;
  const provider = new CrossAppAccessProvider({
    clientId: DEMO_AS_CLIENT.clientId,
    clientSecret: DEMO_AS_CLIENT.clientSecret,
    clientName: 'idjag demo client',
    // these credentials were issued by this AS: the SDK refuses to send them to another one
    expectedIssuer: asIssuer,
    fetchFn: traced,
    assertion: async (ctx) => {
      step = 2;
      log('');
      log(`  The MCP server's AS is ${ctx.authorizationServerUrl}; asking the IdP for an ID-JAG for resource ${ctx.resourceUrl}`
        + ` with scope "${ctx.scope ?? '(none)'}":`);
      const grant = await discoverAndRequestJwtAuthGrant({
        idpUrl: issuer,
        audience: ctx.authorizationServerUrl,
        resource: ctx.resourceUrl,
        idToken: signedIn.idToken,
        clientId: DEMO_AGENT.clientId,
        clientSecret: DEMO_AGENT.clientSecret,
        ...(ctx.scope ? { scope: ctx.scope } : {}),
        fetchFn: ctx.fetchFn,
      });
      idJag = grant.jwtAuthGrant;
      step = 3;
      log('');
      log('  Got the ID-JAG; the provider now presents it to the Resource AS (client_secret_basic, its own credentials there):');
      return grant.jwtAuthGrant;
    },
  });
  // a failure after the access token was obtained is the MCP server's (step 4), not the AS's
  const toMcp: FetchLike = (url, init) => {
    if (new Headers(init?.headers).has('authorization')) step = 4;
    return traced(url, init);
  };
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: toMcp });
  const client = new Client({ name: 'idjag-demo-client', version: '0.1.0' });
  const calls: ToolCall[] = [];
  try {
    await client.connect(transport).catch(fail);
    step = 4;
    const call = async (tool: string, args: Record<string, unknown> = {}) => {
      const result = await client.callTool({ name: tool, arguments: args }).catch(fail) as CallToolResult;
      const text = toolText(result);
      if (result.isError) throw new DemoFlowError(4, `the MCP server's ${tool} tool failed: ${text}`, exchanges);
      heading(log, `Result of ${tool}`);
      log(indent(text, '  '));
      calls.push({ tool, text, structured: result.structuredContent });
    };
    heading(log, 'Step 4 · Call the tools', 'The transport now sends the access token with every request.');
    await call('list_todos');
    await call('add_todo', { text: options.todo ?? 'Try the whole Enterprise-Managed Authorization flow' });
    await call('list_todos');
  } finally {
    await client.close().catch(() => undefined);
  }
  const accessToken = provider.tokens()?.access_token;
  if (!idJag || !accessToken) throw new DemoFlowError(step, 'the MCP client connected without getting an ID-JAG and an access token', exchanges);
  heading(log, 'Done', 'The tools saw the user the IdP signed in: the ID-JAG\'s sub and email, carried into the access token.');
  return { idToken: signedIn.claims, idJag: decodeJwt(idJag), accessToken: decodeJwt(accessToken), calls, exchanges };
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
