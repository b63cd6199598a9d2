import type { FetchLike } from '@modelcontextprotocol/client';
import { decodeJwt, decodeProtectedHeader } from 'jose';

/** One HTTP request of the demo client and its answer, as sent and received (unredacted: for tests). */
export interface HttpExchange {
  /** which part of the flow this request belongs to, e.g. "step 2 · IdP token exchange" */
  step: string;
  method: string;
  url: string;
  authorization: string | undefined;
  /** the request's DPoP proof (RFC 9449), if it carried one */
  dpop: string | undefined;
  requestBody: string;
  status: number;
  wwwAuthenticate: string | undefined;
  responseBody: string;
}

export type Log = (line: string) => void;
export type StepOf = (method: string, url: URL, body: string) => string;

const JWT = /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const SECRET_KEYS = new Set(['client_secret', 'password']);
const TOKEN_KEYS = new Set(['code', 'access_token', 'refresh_token', 'id_token', 'subject_token', 'assertion', 'token']);

/** A JWT or token shortened to something recognisable; the whole value never reaches the terminal. */
export function shorten(value: string): string {
  if (JWT.test(value)) return `${value.slice(0, 16)}…(JWT, ${value.length} chars)`;
  return value.length > 12 ? `${value.slice(0, 8)}…` : value;
}

/** A form or JSON field's value as shown: secrets hidden, tokens shortened. */
export function redact(key: string, value: string): string {
  if (SECRET_KEYS.has(key)) return '***';
  if (TOKEN_KEYS.has(key) || JWT.test(value)) return shorten(value);
  return value;
}

/** `Basic (id:***)` or `Bearer eyJ…`: enough to see which credential went where. */
export function redactAuthorization(header: string): string {
  const [scheme = '', value = ''] = header.split(/ +/, 2);
  if (scheme.toLowerCase() === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    return `Basic base64(${decodeURIComponent(decoded.split(':')[0] ?? '')}:***)`;
  }
  return `${scheme} ${shorten(value)}`;
}

/** JSON with every token shortened and every secret hidden, at any depth. */
export function redactJson(value: unknown, key = ''): unknown {
  if (typeof value === 'string') return redact(key, value);
  if (Array.isArray(value)) return value.map((v) => redactJson(v, key));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactJson(v, k)]));
  }
  return value;
}

/** Header and claims of every JWT among a JSON object's top-level fields: what the tutorial is about. */
export function decodedJwts(body: unknown): { field: string; header: object; claims: object }[] {
  if (!body || typeof body !== 'object') return [];
  return Object.entries(body).flatMap(([field, v]) => {
    if (typeof v !== 'string' || !JWT.test(v)) return [];
    try {
      return [{ field, header: decodeProtectedHeader(v), claims: decodeJwt(v) }];
    } catch {
      return [];
    }
  });
}

export function indent(text: string, by = '      '): string {
  return text.split('\n').map((l) => by + l).join('\n');
}

/** Query parameters as sent, but a `code` (or any token) shortened. */
export function redactUrl(url: URL): string {
  const query = [...url.searchParams].map(([k, v]) => `${k}=${redact(k, v)}`).join('&');
  return `${url.origin}${url.pathname}${query ? `?${query}` : ''}`;
}

function bodyText(body: RequestInit['body']): string {
  if (typeof body === 'string') return body;
  if (body instanceof URLSearchParams) return body.toString();
  return body == null ? '' : '(binary body)';
}

function formatRequestBody(text: string, contentType: string): string[] {
  if (!text) return [];
  if (contentType.includes('application/x-www-form-urlencoded') || /^[\w.%-]+=/.test(text)) {
    return [...new URLSearchParams(text)].map(([k, v]) => `${k}=${redact(k, v)}`);
  }
  try {
    return [JSON.stringify(redactJson(JSON.parse(text)))];
  } catch {
    return [text.slice(0, 200)];
  }
}

/** JSON bodies pretty-printed, SSE streams as the JSON messages they carry. */
function parseResponseBody(text: string, contentType: string): unknown[] {
  if (contentType.includes('text/event-stream')) {
    return text.split('\n').filter((l) => l.startsWith('data:')).map((l) => {
      try {
        return JSON.parse(l.slice(5));
      } catch {
        return l.slice(5).trim();
      }
    });
  }
  if (!text) return [];
  if (contentType.includes('text/html')) {
    const title = /<title>([^<]*)<\/title>/i.exec(text)?.[1];
    return [`(an HTML page${title ? `: "${title.trim()}"` : ''})`];
  }
  try {
    return [JSON.parse(text)];
  } catch {
    return [text.length > 300 ? `${text.slice(0, 300)}…` : text];
  }
}

/** The fields of a metadata document that matter to this flow; the rest is only counted. */
const METADATA_FIELDS = [
  'issuer', 'resource', 'authorization_servers', 'authorization_endpoint', 'token_endpoint', 'jwks_uri', 'grant_types_supported',
  'identity_chaining_requested_token_types_supported', 'authorization_grant_profiles_supported', 'token_endpoint_auth_methods_supported', 'scopes_supported',
];

function formatBody(body: unknown, url: URL): string {
  if (typeof body === 'string') return body;
  const redacted = redactJson(body) as Record<string, unknown>;
  if (url.pathname.startsWith('/.well-known/') && redacted && typeof redacted === 'object') {
    const shown = Object.fromEntries(METADATA_FIELDS.filter((k) => k in redacted).map((k) => [k, redacted[k]]));
    const hidden = Object.keys(redacted).length - Object.keys(shown).length;
    return `${JSON.stringify(shown, null, 2)}${hidden ? `\n(and ${hidden} more fields)` : ''}`;
  }
  // JSON-RPC messages on one line: the tool results are printed in full afterwards
  if ('jsonrpc' in redacted) {
    const line = JSON.stringify(redacted);
    return line.length > 400 ? `${line.slice(0, 400)}…` : line;
  }
  return JSON.stringify(redacted, null, 2);
}

/** A DPoP proof as the tutorial shows it: shortened, then what it says (the key is named by its thumbprint in the tokens). */
function formatProof(proof: string): string[] {
  try {
    const { typ, alg, jwk } = decodeProtectedHeader(proof);
    const { htm, htu, iat, ath, nonce } = decodeJwt(proof);
    const claims = { htm, htu, iat, ...(ath === undefined ? {} : { ath: shorten(String(ath)) }), ...(nonce === undefined ? {} : { nonce: shorten(String(nonce)) }) };
    return [`DPoP: ${shorten(proof)}`, `  proof: header ${JSON.stringify({ typ, alg, jwk: jwk ? `(${jwk.kty} public key)` : undefined })} claims ${JSON.stringify(claims)}`];
  } catch {
    return [`DPoP: ${shorten(proof)} (not a JWT)`];
  }
}

function formatResponse(res: Response, url: URL, text: string): string[] {
  const lines: string[] = [];
  const challenge = res.headers.get('www-authenticate');
  if (challenge) lines.push(`WWW-Authenticate: ${challenge}`);
  const nonce = res.headers.get('dpop-nonce');
  if (nonce) lines.push(`DPoP-Nonce: ${shorten(nonce)}`);
  const location = res.headers.get('location');
  if (location) {
    lines.push(`Location: ${redactUrl(new URL(location, url))}`);
    return lines;
  }
  for (const body of parseResponseBody(text, res.headers.get('content-type') ?? '')) {
    lines.push(formatBody(body, url));
    for (const jwt of decodedJwts(body)) {
      lines.push(`${jwt.field}, decoded:`, `  header ${JSON.stringify(jwt.header)}`, indent(`claims ${JSON.stringify(jwt.claims, null, 2)}`, '  '));
    }
  }
  return lines;
}

/**
 * A fetch that prints every request of the demo client with its answer, labelled with the step of the flow it
 * belongs to, tokens shortened and JWTs decoded, and records the exchange unredacted in `exchanges`. Each
 * request and answer print as one block, so requests running side by side do not interleave. Long-lived
 * event streams are not waited for: only their opening is printed.
 */
export function tracingFetch(log: Log, stepOf: StepOf, exchanges: HttpExchange[]): FetchLike {
  return async (input, init = {}) => {
    const url = new URL(String(input));
    const method = (init.method ?? 'GET').toUpperCase();
    const headers = new Headers(init.headers);
    const requestBody = bodyText(init.body);
    const step = stepOf(method, url, requestBody);
    const authorization = headers.get('authorization') ?? undefined;
    const dpop = headers.get('dpop') ?? undefined;
    const block = ['', `  [${step}]`, `  → ${method} ${redactUrl(url)}`];
    if (authorization) block.push(`      Authorization: ${redactAuthorization(authorization)}`);
    if (dpop) block.push(...formatProof(dpop).map((l) => indent(l)));
    block.push(...formatRequestBody(requestBody, headers.get('content-type') ?? '').map((l) => indent(l)));
    let res: Response;
    try {
      res = await fetch(input, init);
    } catch (err) {
      block.push(`  ✗ no answer: ${(err as Error).message}`);
      block.forEach((l) => log(l));
      throw err;
    }
    const streaming = method === 'GET' && (res.headers.get('content-type') ?? '').includes('text/event-stream');
    const responseBody = streaming ? '' : await res.clone().text();
    exchanges.push({ step, method, url: url.href, authorization, dpop, requestBody, status: res.status, wwwAuthenticate: res.headers.get('www-authenticate') ?? undefined, responseBody });
    block.push(`  ← ${res.status} ${res.statusText}${streaming ? ' (event stream opened)' : ''}`);
    block.push(...formatResponse(res, url, responseBody).map((l) => indent(l)));
    block.forEach((l) => log(l));
    return res;
  };
}
