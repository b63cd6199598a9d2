import { createHash, randomBytes } from 'node:crypto';
import { CookieJar } from 'tough-cookie';

export const REDIRECT_URI = 'http://127.0.0.1:8976/callback';

/** A minimal browser: a cookie jar and manual redirects, so a test sees every hop of the flow. */
export class Browser {
  readonly jar = new CookieJar();

  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    const cookie = await this.jar.getCookieString(url);
    if (cookie) headers.set('cookie', cookie);
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) await this.jar.setCookie(c, url);
    return res;
  }

  async get(url: string): Promise<Response> {
    return this.fetch(url);
  }

  async postForm(url: string, form: Record<string, string>): Promise<Response> {
    return this.fetch(url, { method: 'POST', body: new URLSearchParams(form), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  }
}

export function csrfFrom(html: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  if (!m) throw new Error(`no CSRF token in page:\n${html.slice(0, 500)}`);
  return m[1]!;
}

export function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

/** The provider's self-submitting form (a form and a script that submits it on load): its action and fields. */
export function autoSubmittedForm(html: string): { action: string; fields: Record<string, string> } | undefined {
  if (!/document\.forms\[0\]\.submit\(\)/.test(html)) return undefined;
  const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
  if (!action) return undefined;
  const fields: Record<string, string> = {};
  for (const m of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"\/?>/g)) fields[m[1]!] = m[2]!;
  return { action: action.replace(/&amp;/g, '&'), fields };
}

export interface AuthorizeOptions {
  clientId?: string;
  username?: string;
  password?: string;
  scope?: string;
  prompt?: string;
  browser?: Browser;
  /** answer a consent page with Allow */
  consent?: boolean;
}

export interface AuthorizeResult {
  code: string;
  verifier: string;
  nonce: string;
  state: string;
  browser: Browser;
  /** the pages seen on the way, by URL path */
  pages: { url: string; status: number; body?: string }[];
}

/** Walks the authorization code flow through the real login form and, for third-party clients, the consent form. */
export async function authorize(base: string, opts: AuthorizeOptions = {}): Promise<AuthorizeResult> {
  const browser = opts.browser ?? new Browser();
  const { verifier, challenge } = pkce();
  const nonce = randomBytes(8).toString('hex');
  const state = randomBytes(8).toString('hex');
  const params = new URLSearchParams({
    client_id: opts.clientId ?? 'demo-agent',
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: opts.scope ?? 'openid email profile',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    nonce,
    state,
    ...(opts.prompt ? { prompt: opts.prompt } : {}),
  });
  const pages: AuthorizeResult['pages'] = [];
  let url = `${base}/auth?${params}`;
  let res = await browser.get(url);
  for (let hop = 0; hop < 12; hop++) {
    if (res.status === 302 || res.status === 303) {
      const location = new URL(res.headers.get('location')!, url).toString();
      pages.push({ url, status: res.status });
      if (location.startsWith(REDIRECT_URI)) {
        const back = new URL(location);
        const code = back.searchParams.get('code');
        if (!code) throw new Error(`authorization failed: ${back.search}`);
        if (back.searchParams.get('state') !== state) throw new Error('state mismatch');
        return { code, verifier, nonce, state, browser, pages };
      }
      url = location;
      res = await browser.get(url);
      continue;
    }
    const body = await res.text();
    pages.push({ url, status: res.status, body });
    const autoPost = autoSubmittedForm(body);
    if (autoPost) {
      // what a browser's script does with the provider's self-submitting forms (signing out the previous user)
      url = new URL(autoPost.action, url).toString();
      res = await browser.postForm(url, autoPost.fields);
      continue;
    }
    if (body.includes('action="/interaction/') && body.includes('/login"')) {
      const uid = new URL(url).pathname.split('/')[2];
      url = `${base}/interaction/${uid}/login`;
      res = await browser.postForm(url, { _csrf: csrfFrom(body), username: opts.username ?? 'alice', password: opts.password ?? 'alice' });
      if (res.status === 401 || res.status === 400) {
        const page = await res.text();
        pages.push({ url, status: res.status, body: page });
        throw Object.assign(new Error(`login refused (${res.status})`), { page, pages });
      }
      continue;
    }
    if (body.includes('/confirm"') && opts.consent !== false) {
      const uid = new URL(url).pathname.split('/')[2];
      url = `${base}/interaction/${uid}/confirm`;
      res = await browser.postForm(url, { _csrf: csrfFrom(body) });
      continue;
    }
    throw Object.assign(new Error(`unexpected page ${res.status} at ${url}`), { page: body, pages });
  }
  throw new Error('too many redirects');
}

export interface TokenResponse {
  status: number;
  body: Record<string, any>;
  headers: Headers;
}

export function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

export async function tokenRequest(base: string, form: Record<string, string | string[]>, auth?: { id: string; secret: string } | null, extraHeaders: Record<string, string> = {}): Promise<TokenResponse> {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(form)) for (const item of [v].flat()) body.append(k, item);
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', ...extraHeaders };
  if (auth) headers.authorization = basic(auth.id, auth.secret);
  const res = await fetch(`${base}/token`, { method: 'POST', body, headers });
  return { status: res.status, body: await res.json() as Record<string, any>, headers: res.headers };
}

export const DEMO_AGENT = { id: 'demo-agent', secret: 'demo-agent-secret' };

/** The whole sign-in: authorization code flow, then the code exchange. */
export async function signIn(base: string, opts: AuthorizeOptions = {}) {
  const auth = await authorize(base, opts);
  const tokens = await tokenRequest(base, {
    grant_type: 'authorization_code', code: auth.code, redirect_uri: REDIRECT_URI, code_verifier: auth.verifier,
  }, opts.clientId && opts.clientId !== 'demo-agent' ? null : DEMO_AGENT);
  if (tokens.status !== 200) throw new Error(`code exchange failed: ${JSON.stringify(tokens.body)}`);
  return { ...auth, tokens: tokens.body };
}
