import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { FetchLike } from '@modelcontextprotocol/client';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import type { Log } from './trace.ts';

/** What step 1 needs of the IdP's metadata (RFC 8414 / OpenID Connect Discovery). */
export interface IdpEndpoints {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  jwks_uri: string;
}

export interface SignInOptions {
  idp: IdpEndpoints;
  clientId: string;
  clientSecret: string;
  redirectUri: string;
  scope: string;
  /** drive the IdP's login form with these instead of waiting for a browser */
  credentials?: { username: string; password: string } | undefined;
  fetch: FetchLike;
  log: Log;
  /** how long to wait for the browser to come back to the redirect URI, default 5 minutes */
  browserTimeoutMs?: number | undefined;
}

export interface SignedIn {
  idToken: string;
  claims: JWTPayload;
}

/** A step-1 failure, worded for the person running the demo. */
export class SignInError extends Error {}

interface AuthorizationRequest {
  url: string;
  state: string;
  nonce: string;
  verifier: string;
}

/**
 * Step 1: OpenID Connect authorization code flow with PKCE (RFC 7636) and a nonce, the code redeemed with
 * client_secret_basic, and the ID Token verified (signature, issuer, audience, nonce) before it is used.
 */
export async function signIn(o: SignInOptions): Promise<SignedIn> {
  const request = authorizationRequest(o);
  const code = o.credentials
    ? await codeFromLoginForm(request, o.credentials, o)
    : await codeFromBrowser(request, o);
  const idToken = await redeemCode(code, request, o);
  return { idToken, claims: await verifyIdToken(idToken, request.nonce, o) };
}

function authorizationRequest(o: SignInOptions): AuthorizationRequest {
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(12).toString('base64url');
  const nonce = randomBytes(12).toString('base64url');
  const url = new URL(o.idp.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: o.clientId,
    response_type: 'code',
    redirect_uri: o.redirectUri,
    scope: o.scope,
    state,
    nonce,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  }).toString();
  return { url: url.href, state, nonce, verifier };
}

/** The code from the redirect back to the client, after checking it answers this request (`state`). */
function codeFromCallback(callback: URL, state: string): string {
  const error = callback.searchParams.get('error');
  if (error) {
    const description = callback.searchParams.get('error_description');
    throw new SignInError(`the IdP ended the sign-in with ${error}${description ? `: ${description}` : ''}`);
  }
  if (callback.searchParams.get('state') !== state) {
    throw new SignInError('the redirect carries another state than the one sent: it does not answer this sign-in; start again');
  }
  const code = callback.searchParams.get('code');
  if (!code) throw new SignInError('the redirect back from the IdP carries no code');
  return code;
}

// ---------------------------------------------------------------------------------------------------------
// --username/--password: the login form, driven over HTTP

/**
 * Just enough of a cookie jar for one sign-in at one IdP: the interaction and session cookies by name.
 * Paths are not tracked (sending the IdP its own cookie on another of its paths changes nothing).
 */
export class CookieJar {
  readonly #cookies = new Map<string, string>();

  store(res: Response) {
    for (const line of res.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const attrs = attributes.map((a) => a.trim().toLowerCase());
      const expired = attrs.some((a) => a === 'max-age=0' || (a.startsWith('expires=') && Date.parse(a.slice(8)) <= Date.now()));
      if (expired) this.#cookies.delete(name);
      else this.#cookies.set(name, pair.slice(eq + 1).trim());
    }
  }

  header(): string {
    return [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

const ENTITIES: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#x27;': "'", '&#x3D;': '=', '&#x60;': '`', '&#39;': "'" };
/**
 * What a browser does between pages, without one: a cookie jar, redirects left to the caller (so it sees each
 * hop), a GET, or a form POSTed url-encoded.
 */
export function browserlessSession(fetchImpl: FetchLike = fetch): (url: string, form?: Record<string, string>) => Promise<Response> {
  const jar = new CookieJar();
  return async (url, form) => {
    const headers: Record<string, string> = {};
    const cookie = jar.header();
    if (cookie) headers.cookie = cookie;
    if (form) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetchImpl(url, { method: form ? 'POST' : 'GET', headers, redirect: 'manual', ...(form ? { body: new URLSearchParams(form) } : {}) });
    jar.store(res);
    return res;
  };
}

export const unescapeHtml = (s: string) => s.replace(/&(?:amp|lt|gt|quot|#x27|#x3D|#x60|#39);/g, (e) => ENTITIES[e] ?? e);

interface LoginForm {
  action: string;
  csrf: string;
}

/** idjag's login page (views/login.hbs): a POST form to `/interaction/{uid}/login` with a `_csrf` field. */
function loginForm(html: string, pageUrl: string): LoginForm | undefined {
  const form = /<form[^>]*action="([^"]*\/login)"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  const csrf = form && /name="_csrf"\s+value="([^"]*)"/i.exec(form[2]!);
  if (!form || !csrf) return undefined;
  return { action: new URL(unescapeHtml(form[1]!), pageUrl).href, csrf: unescapeHtml(csrf[1]!) };
}

export function pageError(html: string): string | undefined {
  const m = /<p class="error"[^>]*>([\s\S]*?)<\/p>/i.exec(html);
  return m ? unescapeHtml(m[1]!.trim()) : undefined;
}

const MAX_HOPS = 12;

/** Follows the IdP's redirects by hand, posts the login form once, and stops at the redirect URI. */
async function codeFromLoginForm(request: AuthorizationRequest, credentials: { username: string; password: string }, o: SignInOptions): Promise<string> {
  o.log(`  Signing in as ${credentials.username} through the IdP's login form (--username/--password, no browser).`);
  const send = browserlessSession(o.fetch);
  let url = request.url;
  let res = await send(url);
  let submitted = false;
  for (let hop = 0; hop < MAX_HOPS; hop++) {
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      const next = new URL(location, url);
      if (next.href.startsWith(o.redirectUri)) return codeFromCallback(next, request.state);
      url = next.href;
      res = await send(url);
      continue;
    }
    const html = await res.text();
    const form = loginForm(html, url);
    if (submitted && (res.status >= 400 || form)) {
      throw new SignInError(`the IdP refused the sign-in as ${credentials.username}: ${pageError(html) ?? `HTTP ${res.status}`}`);
    }
    if (!form) {
      throw new SignInError(`expected the IdP's login form at ${url} but got HTTP ${res.status}${pageError(html) ? `: ${pageError(html)}` : ''}; `
        + 'a client that needs consent or another interaction must sign in through the browser (run without --username)');
    }
    url = form.action;
    res = await send(url, { _csrf: form.csrf, username: credentials.username, password: credentials.password });
    submitted = true;
  }
  throw new SignInError(`the IdP redirected more than ${MAX_HOPS} times without coming back to ${o.redirectUri}`);
}

// ---------------------------------------------------------------------------------------------------------
// The browser: print the URL, receive the redirect on a loopback listener (RFC 8252 §7.3)

async function codeFromBrowser(request: AuthorizationRequest, o: SignInOptions): Promise<string> {
  const redirect = new URL(o.redirectUri);
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new SignInError(err.code === 'EADDRINUSE'
      ? `${redirect.host} is in use, but the client's registered redirect URI is ${o.redirectUri}: stop what listens there and retry`
      : `cannot listen on ${redirect.host} for the redirect: ${err.message}`)));
    server.listen(Number(redirect.port), redirect.hostname, () => resolve());
  });
  o.log('  Open this URL in a browser and sign in (seeded users: alice / alice, bob / bob):');
  o.log('');
  o.log(`    ${request.url}`);
  o.log('');
  o.log(`  Waiting for the browser to come back to ${o.redirectUri} ...`);
  const timeoutMs = o.browserTimeoutMs ?? 5 * 60_000;
  try {
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new SignInError(`no sign-in came back within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
      server.on('request', (req, res) => {
        const callback = new URL(req.url ?? '/', o.redirectUri);
        if (callback.pathname !== redirect.pathname) {
          res.writeHead(404).end();
          return;
        }
        clearTimeout(timer);
        try {
          const code = codeFromCallback(callback, request.state);
          res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<!doctype html><title>Signed in</title><p>Signed in. You can close this window and return to the terminal.</p>');
          resolve(code);
        } catch (err) {
          res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end(`Sign-in failed: ${(err as Error).message}`);
          reject(err);
        }
      });
    });
  } finally {
    server.close();
    server.closeAllConnections();
  }
}

// ---------------------------------------------------------------------------------------------------------

async function redeemCode(code: string, request: AuthorizationRequest, o: SignInOptions): Promise<string> {
  o.log('');
  o.log('  The client redeems the code at the IdP\'s token endpoint (client_secret_basic, with the PKCE verifier):');
  const res = await o.fetch(o.idp.token_endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(o.clientId)}:${encodeURIComponent(o.clientSecret)}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: o.redirectUri, code_verifier: request.verifier }),
  });
  const body = await res.json().catch(() => ({})) as Record<string, unknown>;
  if (res.status !== 200 || typeof body.id_token !== 'string') {
    throw new SignInError(`the IdP did not redeem the code: ${String(body.error ?? `HTTP ${res.status}`)}${body.error_description ? ` (${String(body.error_description)})` : ''}`);
  }
  return body.id_token;
}

async function verifyIdToken(idToken: string, nonce: string, o: SignInOptions): Promise<JWTPayload> {
  try {
    const { payload } = await jwtVerify(idToken, createRemoteJWKSet(new URL(o.idp.jwks_uri)), { issuer: o.idp.issuer, audience: o.clientId });
    if (payload.nonce !== nonce) throw new Error('its nonce is not the one this client sent');
    return payload;
  } catch (err) {
    throw new SignInError(`the ID Token from the IdP does not verify: ${(err as Error).message}`);
  }
}
