import { createHash, randomBytes } from 'node:crypto';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import { browserlessSession, pageError, unescapeHtml } from '../demo/sign-in.ts';

/**
 * A sign-in without a browser, through idjag's real endpoints over HTTP, as a browser and a client would do
 * it: the authorization request (code flow, PKCE S256, state, nonce), idjag's own login page with the user's
 * password, its consent page when the client is not first-party, the redirect carrying the code, and the code
 * redeemed at the token endpoint with the client's credentials. Nothing is minted on the side: the tokens are
 * the provider's, the login is throttled and recorded like any other, and the ID Token is verified against
 * the published keys before it is returned.
 */

export interface SignInParameters {
  url: string;
  issuer: string;
  username: string;
  password: string;
  clientId: string;
  /** none for a public client */
  clientSecret: string | undefined;
  /** client_secret_post sends the secret in the body; anything else with a secret uses HTTP Basic */
  authMethod: string | undefined;
  redirectUri: string;
  scope: string;
  /** answer the consent page with Allow (true) or Deny (false) when it is shown */
  consent: boolean;
}

export interface SignedInTokens {
  id_token: string;
  access_token: string;
  /** when the client may use refresh tokens and `offline_access` was asked for (the default) */
  refresh_token?: string;
  token_type: string;
  expires_in: number;
  scope: string;
  /** the ID Token's claims, after its signature, issuer, audience and nonce were checked */
  claims: JWTPayload;
}

/** A sign-in that could not finish, with what idjag answered. */
export class SignInFailed extends Error {
  override name = 'SignInFailed';
}

const MAX_HOPS = 12;

interface Form { action: string; csrf: string }

/** idjag's login (`/interaction/{uid}/login`) or consent (`/interaction/{uid}/confirm`) form on a page. */
function interactionForm(html: string, pageUrl: string, step: 'login' | 'confirm'): Form | undefined {
  const form = new RegExp(`<form[^>]*action="([^"]*/${step})"[^>]*>([\\s\\S]*?)</form>`, 'i').exec(html);
  const csrf = form && /name="_csrf"\s+value="([^"]*)"/i.exec(form[2]!);
  if (!form || !csrf) return undefined;
  return { action: new URL(unescapeHtml(form[1]!), pageUrl).href, csrf: unescapeHtml(csrf[1]!) };
}

export async function signInOverHttp(p: SignInParameters): Promise<SignedInTokens> {
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(12).toString('base64url');
  const nonce = randomBytes(12).toString('base64url');
  const authorize = new URL('/auth', p.url);
  authorize.search = new URLSearchParams({
    client_id: p.clientId,
    response_type: 'code',
    redirect_uri: p.redirectUri,
    scope: p.scope,
    state,
    nonce,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    // the provider issues a refresh token for offline_access only when consent was prompted for
    ...(p.scope.split(' ').includes('offline_access') ? { prompt: 'consent' } : {}),
  }).toString();
  const code = await codeFor(authorize.href, state, p);
  return redeem(code, verifier, nonce, p);
}

async function codeFor(authorizeUrl: string, state: string, p: SignInParameters): Promise<string> {
  const send = browserlessSession();
  let url = authorizeUrl;
  let res = await send(url);
  let loggedIn = false;
  for (let hop = 0; hop < MAX_HOPS; hop++) {
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      const next = new URL(location, url);
      if (next.href.startsWith(p.redirectUri)) return codeFromRedirect(next, state);
      url = next.href;
      res = await send(url);
      continue;
    }
    const html = await res.text();
    const login = interactionForm(html, url, 'login');
    const consent = interactionForm(html, url, 'confirm');
    if (login && !loggedIn) {
      url = login.action;
      res = await send(url, { _csrf: login.csrf, username: p.username, password: p.password });
      loggedIn = true;
    } else if (consent) {
      url = consent.action.replace(/\/confirm$/, p.consent ? '/confirm' : '/abort');
      res = await send(url, { _csrf: consent.csrf });
    } else {
      throw new SignInFailed(`idjag refused the sign-in of ${p.username} for ${p.clientId}: ${pageError(html) ?? `HTTP ${res.status} at ${new URL(url).pathname}`}`);
    }
  }
  throw new SignInFailed(`idjag redirected more than ${MAX_HOPS} times without coming back to ${p.redirectUri}`);
}

function codeFromRedirect(callback: URL, state: string): string {
  const error = callback.searchParams.get('error');
  if (error) {
    const description = callback.searchParams.get('error_description');
    throw new SignInFailed(`the sign-in ended with ${error}${description ? `: ${description}` : ''}`);
  }
  if (callback.searchParams.get('state') !== state) throw new SignInFailed('the redirect back carries another state than the one sent');
  const code = callback.searchParams.get('code');
  if (!code) throw new SignInFailed('the redirect back carries no code');
  return code;
}

async function redeem(code: string, verifier: string, nonce: string, p: SignInParameters): Promise<SignedInTokens> {
  const form = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: p.redirectUri, code_verifier: verifier });
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  if (p.clientSecret === undefined || p.authMethod === 'client_secret_post') {
    form.set('client_id', p.clientId);
    if (p.clientSecret !== undefined) form.set('client_secret', p.clientSecret);
  } else {
    headers.authorization = basicAuth(p.clientId, p.clientSecret);
  }
  const res = await fetch(new URL('/token', p.url), { method: 'POST', headers, body: form });
  const body = await res.json().catch(() => ({})) as Record<string, unknown>;
  if (res.status !== 200 || typeof body.id_token !== 'string' || typeof body.access_token !== 'string') {
    throw new SignInFailed(`idjag did not redeem the code for ${p.clientId}: ${String(body.error ?? `HTTP ${res.status}`)}${body.error_description ? ` (${String(body.error_description)})` : ''}`);
  }
  const { payload } = await jwtVerify(body.id_token, createRemoteJWKSet(new URL('/jwks', p.url)), { issuer: p.issuer, audience: p.clientId });
  if (payload.nonce !== nonce) throw new SignInFailed('the ID Token carries another nonce than the one sent');
  return {
    id_token: body.id_token,
    access_token: body.access_token,
    ...(typeof body.refresh_token === 'string' ? { refresh_token: body.refresh_token } : {}),
    token_type: String(body.token_type),
    expires_in: Number(body.expires_in),
    scope: String(body.scope ?? ''),
    claims: payload,
  };
}

/** RFC 6749 §2.3.1: the client id and secret are form-urlencoded before they are joined. */
export function basicAuth(clientId: string, secret: string): string {
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(clientId)}:${enc(secret)}`).toString('base64')}`;
}
