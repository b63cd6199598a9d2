import { randomBytes } from 'node:crypto';
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import { createRemoteJWKSet, SignJWT } from 'jose';
import type { Context, Middleware } from 'koa';
import type { Logger } from 'pino';
import type { DB } from '../db/index.ts';
import { DPOP_ALGS, DpopProofError, replayKeepUntil, replayKey, singleProof, verifyDpopProof, type VerifiedProof } from '../dpop/proof.ts';
import { DemoClientRegistry, parseBasic, type DemoClient } from './clients.ts';
import { invalidClient, invalidGrant, invalidRequest, OAuthError } from './errors.ts';
import { splitScope, verifyIdJag, type IdJagTrust, type VerifiedIdJag } from './id-jag.ts';
import { JtiStore, loadDemoSigningKey, type DemoSigningKey } from './store.ts';

export { hashDemoSecret, type DemoClient } from './clients.ts';

export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const ID_JAG_PROFILE = 'urn:ietf:params:oauth:grant-profile:id-jag';

/** An MCP server this AS issues access tokens for. */
export interface DemoMcpServer {
  /** RFC 9728 resource identifier: the access token's `aud`, compared as an exact string */
  resource: string;
  /** the scopes it defines; ID-JAG scopes outside this list are never issued */
  scopes: string[];
}

/**
 * Options of the demo Resource AS. It is a separate party from the IdP: it learns the IdP's keys only over
 * HTTP from `idpJwksUri`, and keeps its own state (replay cache, signing key) through `db`.
 */
export interface DemoResourceAsOptions {
  /** storage for the `demo_jti` replay table and its signing key (in `settings`); migrated by the caller */
  db: DB;
  /** origin (optionally with a path) the routes are served under; the issuer is `{baseUrl}/demo/as` */
  baseUrl: string;
  /** the one IdP whose ID-JAGs it accepts (`iss`) */
  idpIssuer: string;
  /** that IdP's JWKS */
  idpJwksUri: string;
  /** its clients, with their credentials at this AS (client_secret_basic) */
  clients: DemoClient[];
  mcpServers: DemoMcpServer[];
  /** access token lifetime in seconds, default 3600 */
  accessTokenLifetime?: number;
  /** clock skew tolerated on the ID-JAG's `exp`/`iat`, seconds, default 30 */
  clockSkew?: number;
  /** logs server-side failures (never the assertion or credentials) */
  log?: Pick<Logger, 'error'>;
}

export type DemoResourceAs = Middleware & { issuer: string };

const FORM_LIMIT = '16kb';
/** DPoP proofs are made right before their request (RFC 9449 §11.1): older ones are refused. */
const PROOF_MAX_AGE = 60;

/**
 * The demo Resource AS: RFC 8414 metadata, the RFC 7523 JWT-bearer token endpoint for ID-JAGs (draft §4.4),
 * its JWKS, and an authorization endpoint that only explains it has no interactive flow. Mount the returned
 * middleware on an app that sees full request paths (no koa-mount prefix):
 *
 *   GET  /.well-known/oauth-authorization-server{issuer path}   metadata (RFC 8414 §3.1)
 *   GET  {issuer}/authorize                                      error page (JWT-bearer only)
 *   POST {issuer}/token                                          jwt-bearer grant with an ID-JAG
 *   GET  {issuer}/jwks                                           public key of its access tokens
 */
export function demoResourceAs(options: DemoResourceAsOptions): DemoResourceAs {
  const issuer = `${options.baseUrl.replace(/\/+$/, '')}/demo/as`;
  const path = new URL(issuer).pathname;
  const skew = options.clockSkew ?? 30;
  const lifetime = options.accessTokenLifetime ?? 3600;
  const servers = new Map(options.mcpServers.map((s) => [s.resource, s]));
  const clients = new DemoClientRegistry(options.clients);
  const jtis = new JtiStore(options.db, skew);
  const trust: IdJagTrust = {
    audience: issuer,
    idpIssuer: options.idpIssuer,
    // No cooldown on refetching for an unknown kid (jose's default is 30 s): the IdP signs with a new key as soon
    // as it rotates (OIDC Core §10.1.1: a new kid tells the verifier to fetch the keys again), and only an
    // authenticated client gets this far, so a flood of made-up kids costs its own credentials.
    idpKeys: createRemoteJWKSet(new URL(options.idpJwksUri), { cooldownDuration: 0 }),
    skew,
  };
  const signingKey = memoize(() => loadDemoSigningKey(options.db));
  const forms = bodyParser({ enableTypes: ['form'], formLimit: FORM_LIMIT });

  const tokenEndpoint = async (ctx: Context) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
    try {
      const form = await readForm(ctx, forms);
      const clientId = await clients.authenticate(parseBasic(ctx.get('authorization') || undefined, issuer), issuer);
      rejectOtherClientAuth(form, issuer);
      const request = readGrantRequest(form);
      const now = Math.floor(Date.now() / 1000);
      const proof = await dpopProof(ctx, `${issuer}/token`, now, skew);
      const idJag = await verifyIdJag(request.assertion, clientId, trust, now);
      checkBinding(idJag, proof);
      const server = targetServer(request.resource, idJag.resources, servers);
      const scopes = grantedScopes(request.scope, idJag.scopes, server);
      // last: a jti is spent only when a token is issued, so a request that failed above can be corrected
      if (proof && !(await jtis.firstUse(`dpop:${replayKey(proof)}`, replayKeepUntil(proof, PROOF_MAX_AGE), now))) {
        throw invalidDpopProof('this DPoP proof was already used; sign a new proof for every request');
      }
      if (!(await jtis.firstUse(idJag.jti, idJag.exp, now))) {
        throw invalidGrant(`this ID-JAG (jti ${idJag.jti}) was already used; get a fresh one from the IdP`);
      }
      const accessToken = await signAccessToken(await signingKey(), { issuer, idJag, clientId, resource: server.resource, scopes, now, lifetime, jkt: proof?.jkt });
      // RFC 9449 §5: a token requested with a proof is bound to its key, and says so
      ctx.body = { access_token: accessToken, token_type: proof ? 'DPoP' : 'Bearer', expires_in: lifetime, scope: scopes.join(' ') };
    } catch (err) {
      respondWithError(ctx, err, options.log);
    }
  };

  const router = new Router();
  router.get(`/.well-known/oauth-authorization-server${path}`, (ctx) => {
    ctx.body = metadata(issuer, options.mcpServers);
  });
  router.get(`${path}/jwks`, async (ctx) => {
    ctx.set('Cache-Control', 'public, max-age=300');
    ctx.body = { keys: [(await signingKey()).publicJwk] };
  });
  router.all(`${path}/authorize`, authorizePage);
  router.post(`${path}/token`, tokenEndpoint);
  const routes = router.routes();
  const allowed = router.allowedMethods();
  // 405s only for this AS's own paths: in a shared app, other parts' routes are none of its business
  const ours = (p: string) => p.startsWith(`${path}/`);
  const middleware: Middleware = (ctx, next) => routes(ctx as never, () => (ours(ctx.path) ? allowed(ctx as never, next) : next()));
  return Object.assign(middleware, { issuer });
}

function metadata(issuer: string, servers: DemoMcpServer[]) {
  return {
    issuer,
    // The official MCP client requires authorization_endpoint and response_types_supported in any AS
    // metadata. An interactive client that follows them lands on a page saying why it cannot work here.
    authorization_endpoint: `${issuer}/authorize`,
    response_types_supported: ['code'],
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    grant_types_supported: [JWT_BEARER],
    authorization_grant_profiles_supported: [ID_JAG_PROFILE],
    token_endpoint_auth_methods_supported: ['client_secret_basic'],
    scopes_supported: [...new Set(servers.flatMap((s) => s.scopes))],
    // RFC 9449 §5.1: it takes DPoP proofs at its token endpoint, and binds the access token to their key
    dpop_signing_alg_values_supported: DPOP_ALGS,
  };
}

const invalidDpopProof = (description: string) => new OAuthError('invalid_dpop_proof', description);

/** The request's DPoP proof, checked (RFC 9449 §4.3, §5), or undefined when it carries none. */
async function dpopProof(ctx: Context, tokenEndpoint: string, now: number, skew: number): Promise<VerifiedProof | undefined> {
  try {
    const proof = singleProof(ctx.req.headersDistinct.dpop);
    return proof === undefined ? undefined : await verifyDpopProof(proof, { htm: 'POST', htu: tokenEndpoint, now, maxAge: PROOF_MAX_AGE, skew });
  } catch (err) {
    if (err instanceof DpopProofError) throw invalidDpopProof(err.message);
    throw err;
  }
}

/**
 * Draft §9.8.1.2: an ID-JAG the IdP bound to a key (`cnf.jkt`, after a DPoP proof at the token exchange) is good
 * only with a proof by that same key here; without one, whoever copied the ID-JAG could use it.
 */
function checkBinding(idJag: VerifiedIdJag, proof: VerifiedProof | undefined): void {
  if (idJag.jkt === undefined) return;
  if (!proof) {
    throw invalidGrant(`this ID-JAG is bound to a DPoP key (cnf.jkt ${idJag.jkt}): present it with a DPoP proof signed by that key`);
  }
  if (proof.jkt !== idJag.jkt) {
    throw invalidGrant(`the DPoP proof is signed by key ${proof.jkt}, but this ID-JAG is bound to key ${idJag.jkt}`);
  }
}

function authorizePage(ctx: Context) {
  ctx.status = 400;
  ctx.type = 'html';
  ctx.set('Cache-Control', 'no-store');
  ctx.body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Not supported: demo Resource AS</title></head>
<body><h1>This demo authorization server has no sign-in page</h1>
<p>It only supports the JWT-bearer grant (<code>${JWT_BEARER}</code>) with an ID-JAG issued by the enterprise IdP
(Enterprise-Managed Authorization). The authorization code flow is not available here.</p>
<p>Configure your MCP client for cross-app access: sign in at the IdP, exchange the ID Token for an ID-JAG, and
present it at this server's token endpoint.</p></body></html>`;
}

type Form = Record<string, unknown>;

/** The body parser runs here, for this route only, so its failures (too large, bad encoding) are OAuth errors too. */
async function readForm(ctx: Context, forms: Middleware): Promise<Form> {
  if (!ctx.is('application/x-www-form-urlencoded')) {
    throw invalidRequest('the token request body must be application/x-www-form-urlencoded (RFC 6749 §4.5)');
  }
  try {
    await forms(ctx as never, async () => undefined);
  } catch (err) {
    const e = err as { status?: number; message?: string };
    throw new OAuthError('invalid_request', `the request body could not be read: ${e.message ?? 'malformed'}`, e.status === 413 ? 413 : 400);
  }
  const body = ctx.request.body;
  return body && typeof body === 'object' ? body as Form : {};
}

/** RFC 6749 §2.3: one authentication method per request, and this AS offers only client_secret_basic. */
function rejectOtherClientAuth(form: Form, realm: string) {
  if (form.client_secret !== undefined || form.client_assertion !== undefined) {
    throw invalidClient('send client credentials only with HTTP Basic (client_secret_basic), not in the request body', realm);
  }
}

/** RFC 6749 §3.2: parameters are single strings, never repeated. */
function param(form: Form, name: string): string | undefined {
  const v = form[name];
  if (v === undefined) return undefined;
  if (Array.isArray(v)) throw invalidRequest(`${name} was sent more than once`);
  if (typeof v !== 'string') throw invalidRequest(`${name} is not a plain form value`);
  return v;
}

interface GrantRequest {
  assertion: string;
  resource: string | undefined;
  scope: string | undefined;
}

function readGrantRequest(form: Form): GrantRequest {
  const grantType = param(form, 'grant_type');
  if (!grantType) throw invalidRequest(`grant_type is missing; this endpoint serves ${JWT_BEARER}`);
  if (grantType !== JWT_BEARER) {
    throw new OAuthError('unsupported_grant_type', `grant_type ${grantType} is not supported; this endpoint serves only ${JWT_BEARER} with an ID-JAG`);
  }
  const assertion = param(form, 'assertion');
  if (!assertion) throw invalidRequest('assertion is missing: send the ID-JAG from the IdP as assertion (RFC 7523 §2.1)');
  return { assertion, resource: param(form, 'resource') || undefined, scope: param(form, 'scope') };
}

/**
 * The MCP server the token is for: the request's `resource`, else the ID-JAG's one resource. It must be one
 * of this AS's servers and, when the ID-JAG names resources, one of them (an ID-JAG without `resource`
 * covers the whole AS).
 */
function targetServer(requested: string | undefined, granted: string[] | undefined, servers: Map<string, DemoMcpServer>): DemoMcpServer {
  const resource = requested ?? onlyGrantedResource(granted);
  const server = servers.get(resource);
  if (!server) {
    throw invalidGrant(`resource ${resource} is not an MCP server of this authorization server (it serves ${[...servers.keys()].join(', ') || 'none'})`);
  }
  if (granted && !granted.includes(resource)) {
    throw invalidGrant(`the ID-JAG grants access to ${granted.join(', ')}, not to resource ${resource}`);
  }
  return server;
}

function onlyGrantedResource(granted: string[] | undefined): string {
  if (!granted) throw invalidGrant('no resource: send resource=<the MCP server\'s resource identifier>, the ID-JAG names none');
  if (granted.length > 1) throw invalidGrant(`the ID-JAG names several resources (${granted.join(', ')}): send resource= to choose one`);
  return granted[0]!;
}

/**
 * Draft §4.4: only scopes both requested and in the ID-JAG (all of the ID-JAG's when none are requested),
 * and only scopes the MCP server defines. A token that allows nothing is refused rather than issued.
 */
function grantedScopes(requested: string | undefined, idJagScopes: string[], server: DemoMcpServer): string[] {
  const grantable = idJagScopes.filter((s) => server.scopes.includes(s));
  const asked = requested === undefined ? grantable : splitScope(requested);
  const granted = asked.filter((s) => grantable.includes(s));
  if (granted.length) return granted;
  if (requested !== undefined) {
    throw invalidGrant(`none of the requested scopes (${asked.join(' ') || 'empty'}) is granted by the ID-JAG for ${server.resource} (it grants ${grantable.join(' ') || 'none'})`);
  }
  throw invalidGrant(`the ID-JAG grants no scope of ${server.resource}`);
}

interface AccessTokenInput {
  issuer: string;
  idJag: VerifiedIdJag;
  clientId: string;
  resource: string;
  scopes: string[];
  now: number;
  lifetime: number;
  /** the DPoP key the token is bound to (RFC 9449 §6.1) */
  jkt: string | undefined;
}

/** RFC 9068 JWT access token, audience-restricted to the one MCP server, and bound to a DPoP key when one was proven. */
async function signAccessToken(key: DemoSigningKey, t: AccessTokenInput): Promise<string> {
  const carried = t.idJag.email === undefined ? {} : { email: t.idJag.email };
  const bound = t.jkt === undefined ? {} : { cnf: { jkt: t.jkt } };
  return new SignJWT({ client_id: t.clientId, scope: t.scopes.join(' '), ...carried, ...bound })
    .setProtectedHeader({ alg: key.alg, typ: 'at+jwt', kid: key.kid })
    .setIssuer(t.issuer)
    .setSubject(t.idJag.sub)
    .setAudience(t.resource)
    .setJti(randomBytes(18).toString('base64url'))
    .setIssuedAt(t.now)
    .setExpirationTime(t.now + t.lifetime)
    .sign(key.privateKey);
}

function respondWithError(ctx: Context, err: unknown, log: DemoResourceAsOptions['log']) {
  if (err instanceof OAuthError) {
    ctx.status = err.status;
    for (const [name, value] of Object.entries(err.headers)) ctx.set(name, value);
    ctx.body = { error: err.error, error_description: err.message };
    return;
  }
  log?.error({ err }, 'demo Resource AS token request failed');
  ctx.status = 500;
  ctx.body = { error: 'server_error', error_description: 'an unexpected error occurred in the demo Resource AS; it has been logged' };
}

/** One shared attempt at a time; a failed attempt is forgotten so the next request retries. */
function memoize<T>(load: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => pending ??= load().catch((err) => {
    pending = undefined;
    throw err;
  });
}
