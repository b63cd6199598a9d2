import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { compactVerify, createLocalJWKSet, decodeJwt, decodeProtectedHeader, type JSONWebKeySet, type JWTPayload } from 'jose';
import { getAuditEntry, type AuditEntry } from '../admin/audit-query.ts';
import type { DB } from '../db/index.ts';
import { DEMO_AGENT, DEMO_AS_CLIENT } from '../demo/seeded.ts';
import { shorten } from '../demo/trace.ts';
import { send, type HttpRecord, type Shown } from './http.ts';

/**
 * The four steps of the flow, as a real client performs them, each request sent over HTTP from this server
 * (so client secrets never reach the browser) and recorded for the page:
 *
 * 1. sign-in: the browser goes through idjag's own login page (authorization code + PKCE, `prompt=login` so any
 *    user can sign in each time); the callback redeems the code at the token endpoint and verifies the ID Token
 *    with the keys fetched from /jwks;
 * 2. the token exchange for an ID-JAG, and the decision idjag wrote to its audit log for that very request;
 * 3. the ID-JAG presented at the Resource AS its `aud` names (RFC 8414 metadata, then the JWT-bearer grant);
 * 4. the MCP server's tools, listed and called with the access token.
 *
 * The client is the seeded `demo-agent` (the terminal demo's client): the same registration and the same rules,
 * so the playground shows exactly the decisions an admin configures for it.
 */

export const CLIENT = DEMO_AGENT;
export const CALLBACK_PATH = '/playground/callback';
const SCOPE = 'openid email profile';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const SIGN_IN_TTL_S = 600;
const MAX_CALLS = 10;
const CLOCK_SKEW_S = 15;

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface Decoded {
  header: string;
  claims: string;
}

interface Pending {
  state: string;
  nonce: string;
  verifier: string;
  exp: number;
}

export interface SignInStep {
  /** the authorization request the browser was sent with (the PKCE verifier never leaves the server) */
  authorization: Shown[];
  /** what the browser brought back to the callback */
  callback: Shown[];
  requests: HttpRecord[];
  idToken?: string;
  decoded?: Decoded;
  claims?: JWTPayload;
  checks: Check[];
  error?: string;
}

export interface Asked {
  audience: string;
  resource: string | undefined;
  scopes: string[];
}

export interface DecisionView {
  auditId: string;
  decision: AuditEntry['decision'];
  reason: string;
  error: string | null;
  explanation: string;
  failed: AuditEntry['checks'][number] | undefined;
  checks: AuditEntry['checks'];
  rules: { id: string; exists: boolean; enabled: boolean }[];
  /** with no rule named: the admin's rule list for this client and target */
  rulesFilter: string | undefined;
}

export interface ExchangeStep {
  asked: Asked;
  requests: HttpRecord[];
  idJag?: string;
  decoded?: Decoded;
  claims?: JWTPayload;
  decision?: DecisionView;
  /** why there is no decision row (refused before the grant ran) */
  noDecision?: string;
  error?: string;
}

export interface PresentStep {
  requests: HttpRecord[];
  accessToken?: string;
  decoded?: Decoded;
  claims?: JWTPayload;
  error?: string;
}

export interface ToolView {
  name: string;
  description: string;
  /** the string arguments its input schema declares */
  args: { name: string; description: string; required: boolean }[];
}

export interface ToolCall {
  tool: string;
  request: HttpRecord;
  ok: boolean;
  text: string;
}

export interface ToolsStep {
  mcpUrl: string;
  requests: HttpRecord[];
  tools: ToolView[];
  calls: ToolCall[];
  error?: string;
}

export interface PlaygroundState {
  pending?: Pending;
  signIn?: SignInStep;
  exchange?: ExchangeStep;
  present?: PresentStep;
  tools?: ToolsStep;
}

export interface FlowDeps {
  db: DB;
  /** the IdP's issuer: where the browser is sent, and the ID Token's `iss` */
  issuer: string;
  /** where this process reaches the IdP (and the demo parties under it) over HTTP */
  url: string;
}

const now = () => Math.floor(Date.now() / 1000);
const pretty = (value: unknown) => JSON.stringify(value, null, 2);

function decode(jwt: string): { decoded: Decoded; claims: JWTPayload } | undefined {
  try {
    const claims = decodeJwt(jwt);
    return { decoded: { header: pretty(decodeProtectedHeader(jwt)), claims: pretty(claims) }, claims };
  } catch {
    return undefined;
  }
}

const oauthError = (json: unknown, status: number | undefined): string => {
  const body = (json ?? {}) as { error?: unknown; error_description?: unknown };
  if (typeof body.error === 'string') return `${body.error}${typeof body.error_description === 'string' ? `: ${body.error_description}` : ''}`;
  return status === undefined ? 'no answer' : `HTTP ${status}`;
};

export class PlaygroundFlow {
  readonly #deps: FlowDeps;

  constructor(deps: FlowDeps) {
    this.#deps = deps;
  }

  /** A public URL of the IdP's (or of the demo parties under it) as this process reaches it. */
  reach(publicUrl: string): string {
    const { issuer, url } = this.#deps;
    return publicUrl === issuer || publicUrl.startsWith(`${issuer}/`) ? `${url}${publicUrl.slice(issuer.length)}` : publicUrl;
  }

  get redirectUri(): string {
    return `${this.#deps.issuer}${CALLBACK_PATH}`;
  }

  /** Step 1 begins: a new authorization request (everything after it starts over). Returns where to send the browser. */
  beginSignIn(s: PlaygroundState): string {
    const pending: Pending = {
      state: randomBytes(16).toString('base64url'),
      nonce: randomBytes(16).toString('base64url'),
      verifier: randomBytes(32).toString('base64url'),
      exp: now() + SIGN_IN_TTL_S,
    };
    const params = new URLSearchParams({
      client_id: CLIENT.clientId,
      response_type: 'code',
      redirect_uri: this.redirectUri,
      scope: SCOPE,
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: createHash('sha256').update(pending.verifier).digest('base64url'),
      code_challenge_method: 'S256',
      // the login page every time, so each sign-in may be another user
      prompt: 'login',
    });
    s.pending = pending;
    s.signIn = { authorization: [...params].map(([name, value]) => ({ name, value })), callback: [], requests: [], checks: [] };
    s.exchange = undefined;
    s.present = undefined;
    s.tools = undefined;
    return `/auth?${params}`;
  }

  /**
   * Step 1 ends: the browser is back with a code (or an error); redeem it and verify the ID Token. A callback
   * that answers no sign-in started in this browser (no such state, expired, already used) changes nothing:
   * the answer is the reason why, and false.
   */
  async completeSignIn(s: PlaygroundState, query: Record<string, unknown>): Promise<string | undefined> {
    const pending = s.pending;
    if (!pending || pending.exp <= now() || typeof query.state !== 'string' || query.state !== pending.state) {
      return 'This callback does not answer a sign-in started here (it expired, was already used, or its state differs), so it was ignored. Sign in again.';
    }
    s.pending = undefined;
    const step: SignInStep = s.signIn ?? { authorization: [], callback: [], requests: [], checks: [] };
    s.signIn = step;
    step.callback = ['code', 'state', 'iss', 'error', 'error_description']
      .filter((k) => typeof query[k] === 'string')
      .map((k) => ({ name: k, value: k === 'code' ? shorten(query[k] as string) : (query[k] as string).slice(0, 500) }));
    if (typeof query.error === 'string') {
      step.error = `The IdP ended the sign-in with ${query.error}${typeof query.error_description === 'string' ? `: ${query.error_description.slice(0, 500)}` : ''}.`;
      return undefined;
    }
    if (typeof query.code !== 'string') {
      step.error = 'The IdP came back without a code.';
      return undefined;
    }
    const { url, issuer } = this.#deps;
    const token = await send({
      title: 'Redeem the code (authorization_code grant, with the PKCE verifier)',
      method: 'POST',
      url: `${url}/token`,
      basic: { id: CLIENT.clientId, secret: CLIENT.clientSecret, secretVar: 'DEMO_AGENT_SECRET' },
      form: [['grant_type', 'authorization_code'], ['code', query.code], ['redirect_uri', this.redirectUri], ['code_verifier', pending.verifier]],
    });
    step.requests.push(token.record);
    const idToken = (token.json as { id_token?: unknown } | undefined)?.id_token;
    if (token.status !== 200 || typeof idToken !== 'string') {
      step.error = `The code was not redeemed: ${oauthError(token.json, token.status)}.`;
      return undefined;
    }
    const jwks = await send({ title: 'Fetch the IdP\'s public keys, to verify the ID Token', method: 'GET', url: `${url}/jwks` });
    step.requests.push(jwks.record);
    const shown = decode(idToken);
    if (shown) Object.assign(step, shown);
    step.checks = await verifyIdToken(idToken, jwks.json as JSONWebKeySet | undefined, { issuer, clientId: CLIENT.clientId, nonce: pending.nonce });
    if (step.checks.every((c) => c.ok)) step.idToken = idToken;
    else step.error = 'The ID Token did not verify: the flow cannot go on with it.';
    return undefined;
  }

  /** Step 2: the ID Token for an ID-JAG, and the decision idjag recorded for this very request. */
  async exchange(s: PlaygroundState, asked: Asked): Promise<void> {
    s.present = undefined;
    s.tools = undefined;
    const step: ExchangeStep = { asked, requests: [] };
    s.exchange = step;
    const idToken = s.signIn?.idToken;
    if (!idToken) {
      step.error = 'Sign in first: the exchange needs a verified ID Token.';
      return;
    }
    const requestId = `playground-${randomUUID()}`;
    const sent = Date.now();
    const res = await send({
      title: 'Exchange the ID Token for an ID-JAG (RFC 8693 token exchange)',
      method: 'POST',
      url: `${this.#deps.url}/token`,
      basic: { id: CLIENT.clientId, secret: CLIENT.clientSecret, secretVar: 'DEMO_AGENT_SECRET' },
      headers: { 'x-request-id': requestId },
      form: [
        ['grant_type', TOKEN_EXCHANGE],
        ['requested_token_type', ID_JAG],
        ['subject_token_type', ID_TOKEN],
        ['subject_token', idToken],
        ['audience', asked.audience],
        ...(asked.resource ? [['resource', asked.resource] as [string, string]] : []),
        ...(asked.scopes.length ? [['scope', asked.scopes.join(' ')] as [string, string]] : []),
      ],
    });
    step.requests.push(res.record);
    const entry = await this.#decisionOf(requestId, sent);
    if (entry) step.decision = decisionView(entry, asked);
    else step.noDecision = 'idjag wrote no decision for this request: it was refused before the token exchange ran (see the answer).';
    const idJag = (res.json as { access_token?: unknown } | undefined)?.access_token;
    if (res.status === 200 && typeof idJag === 'string') {
      step.idJag = idJag;
      const shown = decode(idJag);
      if (shown) Object.assign(step, shown);
    } else {
      step.error = `idjag refused the exchange: ${oauthError(res.json, res.status)}`;
    }
  }

  /** The audit row the token endpoint wrote for the request sent with this X-Request-Id. */
  async #decisionOf(requestId: string, sentMs: number): Promise<AuditEntry | undefined> {
    const row = await this.#deps.db.selectFrom('audit_log').select('id')
      .where('at', '>=', sentMs - 5000).where('request_id', '=', requestId)
      .orderBy('at', 'desc').limit(1).executeTakeFirst();
    return row ? getAuditEntry(this.#deps.db, row.id) : undefined;
  }

  /** Step 3: the ID-JAG at the Resource AS its `aud` names, found through that AS's RFC 8414 metadata. */
  async present(s: PlaygroundState, demoAsIssuer: string): Promise<void> {
    s.tools = undefined;
    const step: PresentStep = { requests: [] };
    s.present = step;
    const idJag = s.exchange?.idJag;
    const aud = s.exchange?.claims?.aud;
    if (!idJag) {
      step.error = 'There is no ID-JAG to present: step 2 must issue one first.';
      return;
    }
    if (aud !== demoAsIssuer) {
      step.error = `This ID-JAG is for ${String(aud)}. Only the demo Resource AS (${demoAsIssuer}) runs here; the other Resource ASes of the catalog are configuration without a server behind them. Choose the demo AS in step 2.`;
      return;
    }
    const issuerUrl = new URL(aud);
    const metadata = await send({
      title: 'Find the Resource AS\'s token endpoint (RFC 8414 metadata)',
      method: 'GET',
      url: this.reach(`${issuerUrl.origin}/.well-known/oauth-authorization-server${issuerUrl.pathname.replace(/\/$/, '')}`),
    });
    step.requests.push(metadata.record);
    const tokenEndpoint = (metadata.json as { token_endpoint?: unknown } | undefined)?.token_endpoint;
    if (metadata.status !== 200 || typeof tokenEndpoint !== 'string' || !URL.canParse(tokenEndpoint)) {
      step.error = `The Resource AS published no usable metadata: ${oauthError(metadata.json, metadata.status)}.`;
      return;
    }
    const resource = s.exchange?.claims?.resource;
    const res = await send({
      title: 'Present the ID-JAG for an access token (RFC 7523 JWT-bearer grant)',
      method: 'POST',
      url: this.reach(tokenEndpoint),
      basic: { id: DEMO_AS_CLIENT.clientId, secret: DEMO_AS_CLIENT.clientSecret, secretVar: 'AS_CLIENT_SECRET' },
      form: [['grant_type', JWT_BEARER], ['assertion', idJag], ...(typeof resource === 'string' ? [['resource', resource] as [string, string]] : [])],
    });
    step.requests.push(res.record);
    const accessToken = (res.json as { access_token?: unknown } | undefined)?.access_token;
    if (res.status !== 200 || typeof accessToken !== 'string') {
      step.error = `The Resource AS refused the ID-JAG: ${oauthError(res.json, res.status)}`;
      return;
    }
    step.accessToken = accessToken;
    const shown = decode(accessToken);
    if (shown) Object.assign(step, shown);
    const mcp = shown?.claims.aud;
    if (typeof mcp === 'string' && URL.canParse(mcp)) await this.listTools(s, mcp);
  }

  /** Step 4 begins: the MCP server's tools, listed with the access token. */
  async listTools(s: PlaygroundState, mcpUrl: string): Promise<void> {
    const step: ToolsStep = { mcpUrl, requests: [], tools: [], calls: [] };
    s.tools = step;
    const res = await this.#rpc(s, 'List the MCP server\'s tools (tools/list)', { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    step.requests.push(res.record);
    const tools = (res.json as { result?: { tools?: unknown } } | undefined)?.result?.tools;
    if (res.status !== 200 || !Array.isArray(tools)) {
      step.error = `The MCP server did not list its tools: ${rpcFailure(res.json, res.record)}`;
      return;
    }
    step.tools = tools.flatMap(toolView);
  }

  /** Step 4: one tool call; its arguments are the strings its input schema declares. */
  async callTool(s: PlaygroundState, tool: ToolView, args: Record<string, string>): Promise<ToolCall> {
    const step = s.tools!;
    const res = await this.#rpc(s, `Call ${tool.name} (tools/call)`, {
      jsonrpc: '2.0', id: step.calls.length + 2, method: 'tools/call', params: { name: tool.name, arguments: args },
    });
    const result = (res.json as { result?: { content?: unknown; isError?: unknown } } | undefined)?.result;
    const texts = Array.isArray(result?.content)
      ? result.content.map((c: { type?: unknown; text?: unknown }) => (c.type === 'text' && typeof c.text === 'string' ? c.text : `(${String(c.type)} content)`))
      : [];
    const ok = res.status === 200 && result !== undefined && result.isError !== true;
    const call: ToolCall = { tool: tool.name, request: res.record, ok, text: result ? texts.join('\n') : rpcFailure(res.json, res.record) };
    step.calls = [call, ...step.calls].slice(0, MAX_CALLS);
    return call;
  }

  #rpc(s: PlaygroundState, title: string, message: unknown) {
    return send({
      title,
      method: 'POST',
      url: this.reach(s.tools!.mcpUrl),
      bearer: s.present!.accessToken!,
      headers: { accept: 'application/json, text/event-stream' },
      json: message,
    });
  }
}

function rpcFailure(json: unknown, record: HttpRecord): string {
  const error = (json as { error?: { message?: unknown } } | undefined)?.error;
  if (error && typeof error.message === 'string') return `JSON-RPC error: ${error.message}`;
  const challenge = record.responseHeaders.find((h) => h.name === 'www-authenticate');
  if (challenge) return `HTTP ${record.status}: ${challenge.value}`;
  return record.failure ?? `HTTP ${record.status}`;
}

function toolView(raw: unknown): ToolView[] {
  const t = raw as { name?: unknown; description?: unknown; inputSchema?: { properties?: Record<string, { type?: unknown; description?: unknown }>; required?: unknown } };
  if (typeof t?.name !== 'string') return [];
  const required = Array.isArray(t.inputSchema?.required) ? t.inputSchema.required : [];
  const args = Object.entries(t.inputSchema?.properties ?? {})
    .filter(([, p]) => p?.type === 'string')
    .map(([name, p]) => ({ name, description: typeof p.description === 'string' ? p.description : '', required: required.includes(name) }));
  return [{ name: t.name, description: typeof t.description === 'string' ? t.description : '', args }];
}

/** What the admin sees of a decision: every check with the admin's explanation, and the rules behind it. */
function decisionView(entry: AuditEntry, asked: Asked): DecisionView {
  const filter = new URLSearchParams({ client_id: CLIENT.clientId, ...(asked.resource ? { resource: asked.resource } : { audience: asked.audience }) });
  return {
    auditId: entry.id,
    decision: entry.decision,
    reason: entry.reason,
    error: entry.error,
    explanation: entry.explanation,
    failed: entry.checks.find((c) => c.status === 'failed'),
    checks: entry.checks,
    rules: entry.rules.map((r) => ({ id: r.id, exists: r.rule !== null, enabled: r.rule?.enabled ?? false })),
    rulesFilter: entry.rules.length ? undefined : filter.toString(),
  };
}

/** The relying party's checks of an ID Token (OpenID Connect Core §3.1.3.7), each shown with its outcome. */
export async function verifyIdToken(idToken: string, jwks: JSONWebKeySet | undefined, expected: { issuer: string; clientId: string; nonce: string }): Promise<Check[]> {
  const checks: Check[] = [];
  let claims: JWTPayload;
  try {
    if (!jwks || !Array.isArray(jwks.keys)) throw new Error('the IdP published no key set');
    const header = decodeProtectedHeader(idToken);
    const { payload } = await compactVerify(idToken, createLocalJWKSet(jwks), { algorithms: ['RS256'] });
    claims = JSON.parse(new TextDecoder().decode(payload)) as JWTPayload;
    checks.push({ name: 'signature', ok: true, detail: `${String(header.alg)} with key ${String(header.kid)}, one of the keys at /jwks` });
  } catch (err) {
    checks.push({ name: 'signature', ok: false, detail: `does not verify: ${(err as Error).message}` });
    return checks;
  }
  const t = now();
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  checks.push(
    { name: 'iss', ok: claims.iss === expected.issuer, detail: `${String(claims.iss)} ${claims.iss === expected.issuer ? 'is' : 'is not'} the IdP ${expected.issuer}` },
    { name: 'aud', ok: aud.includes(expected.clientId), detail: `${aud.join(', ')} ${aud.includes(expected.clientId) ? 'includes' : 'does not include'} this client, ${expected.clientId}` },
    { name: 'exp', ok: typeof claims.exp === 'number' && claims.exp > t, detail: typeof claims.exp === 'number' ? `expires ${new Date(claims.exp * 1000).toISOString()}` : 'no exp claim' },
    { name: 'iat', ok: typeof claims.iat === 'number' && claims.iat <= t + CLOCK_SKEW_S, detail: typeof claims.iat === 'number' ? `issued ${new Date(claims.iat * 1000).toISOString()}` : 'no iat claim' },
    { name: 'nonce', ok: claims.nonce === expected.nonce, detail: claims.nonce === expected.nonce ? 'the nonce this sign-in sent' : 'not the nonce this sign-in sent' },
  );
  return checks;
}
