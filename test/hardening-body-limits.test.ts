/**
 * Request body size limits on every route that reads a body, and on the routes that read none: an oversized
 * body, sent with a Content-Length or chunked (so the size is known only by reading), gets a 4xx and never a
 * 5xx, and the connection it came on still serves the next request (a parser that stops at its limit must not
 * leave the rest of the body blocking the keep-alive connection).
 *
 * The limits: oidc-provider's own endpoints 56 KiB (it answers 400 invalid_request, "failed to parse the request
 * body"); the login and consent forms 16 KB; the admin API 64 KB (its import 2 MB); the admin UI's forms 64 KB;
 * the demo Resource AS 16 KB; the demo MCP server 4 MiB (the MCP SDK's default); the playground's forms 16 KB.
 */
import { connect } from 'node:net';
import type { Config } from '../src/config/index.ts';
import { clientToken } from './helpers/admin.ts';
import { basic, Browser, csrfFrom, signIn } from './helpers/browser.ts';
import { exchange } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// The token endpoint's per-client limit on at its default, the per-user one off: this test sends one user's
// requests by the hundred, past the per-user limit (300 a minute by default).
const UNREACHABLE_RATE_LIMIT = { tokenUserRateLimit: 0 } as Partial<Config>;

let idjag: TestServer;
let adminApiToken: string;
let adminUiCookie: string;
let interactionUid: string;
let interactionCookie: string;
let mcpToken: string;

/** Follows redirects by hand through idjag's login form; returns the last page. */
async function follow(browser: Browser, url: string, login: { username: string; password: string }) {
  let res = await browser.get(url);
  for (let hop = 0; hop < 15; hop++) {
    if ([302, 303].includes(res.status)) {
      url = new URL(res.headers.get('location')!, url).toString();
      res = await browser.get(url);
      continue;
    }
    const html = await res.text();
    const action = /action="(\/interaction\/[^"]+\/login)"/.exec(html)?.[1];
    if (!action) return { status: res.status, url, html };
    url = new URL(action, url).toString();
    res = await browser.postForm(url, { _csrf: csrfFrom(html), ...login });
  }
  throw new Error(`too many redirects at ${url}`);
}

beforeAll(async () => {
  idjag = await startTestServer(UNREACHABLE_RATE_LIMIT);
  adminApiToken = await clientToken(idjag.url);

  // an admin signed in to the admin UI
  const admin = new Browser();
  const page = await follow(admin, `${idjag.url}/admin`, { username: 'admin', password: 'admin' });
  if (page.status !== 200) throw new Error(`admin UI sign-in failed: ${page.status} ${page.url}`);
  adminUiCookie = await admin.jar.getCookieString(`${idjag.url}/admin/rules`);

  // a login page waiting for its form
  const browser = new Browser();
  const auth = await browser.get(`${idjag.url}/auth?${new URLSearchParams({
    client_id: 'demo-agent', response_type: 'code', redirect_uri: 'http://127.0.0.1:8976/callback', scope: 'openid',
    code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
  })}`);
  interactionUid = new URL(auth.headers.get('location')!, idjag.url).pathname.split('/')[2]!;
  interactionCookie = await browser.jar.getCookieString(`${idjag.url}/interaction/${interactionUid}/login`);

  // an access token of the demo Resource AS for the demo MCP server
  const alice = await signIn(idjag.url);
  const jag = await exchange(idjag.url, alice.tokens.id_token, { audience: idjag.demo!.asIssuer, resource: idjag.demo!.mcpResource });
  const at = await fetch(`${idjag.url}/demo/as/token`, {
    method: 'POST',
    headers: { authorization: basic('demo-agent-at-todo', 'demo-agent-at-todo-secret'), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: jag.body.access_token }),
  });
  mcpToken = (await at.json() as { access_token: string }).access_token;
});
afterAll(() => idjag.dispose());

interface Answer { status: number; headers: Record<string, string>; body: string }

/** One HTTP/1.1 response off the front of `buf`, if it is all there. */
function parseResponse(buf: Buffer, ended: boolean): { answer: Answer; rest: Buffer } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...lines] = buf.subarray(0, end).toString('latin1').split('\r\n');
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  const status = Number(statusLine!.split(' ')[1]);
  let at = end + 4;
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const parts: Buffer[] = [];
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', at);
      if (lineEnd < 0) return undefined;
      const size = parseInt(buf.subarray(at, lineEnd).toString('latin1'), 16);
      if (buf.length < lineEnd + 2 + size + 2) return undefined;
      parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
      if (size === 0) return { answer: { status, headers, body: Buffer.concat(parts).toString() }, rest: buf.subarray(at) };
    }
  }
  if (headers['content-length'] === undefined) return ended ? { answer: { status, headers, body: buf.subarray(at).toString() }, rest: Buffer.alloc(0) } : undefined;
  const length = Number(headers['content-length']);
  if (buf.length < at + length) return undefined;
  return { answer: { status, headers, body: buf.subarray(at, at + length).toString() }, rest: buf.subarray(at + length) };
}

/**
 * A client that sends its whole body whatever the server answers, as a raw socket does (Node's own http client
 * stops writing once it has a complete answer, which would look like a stuck server): the oversized request,
 * written in 64 KiB pieces with a Content-Length or chunked, then GET /healthz on the same connection, unless
 * the first answer closed it (then on a new one). Each answer must come within two seconds.
 */
async function oversized(method: string, path: string, size: number, chunked: boolean, headers: Record<string, string>) {
  const { hostname, port } = new URL(idjag.url);
  const socket = connect(Number(port), hostname);
  let buf: Buffer = Buffer.alloc(0);
  let ended = false;
  let waiting: (() => void) | undefined;
  socket.on('data', (d: Buffer) => { buf = Buffer.concat([buf, d]); waiting?.(); });
  socket.on('end', () => { ended = true; waiting?.(); });
  // once the server has answered and closed, what happens to the rest of our writes does not matter
  socket.on('error', () => { ended = true; waiting?.(); });
  const answer = async (what: string) => {
    const deadline = Date.now() + 2000;
    for (;;) {
      const parsed = parseResponse(buf, ended);
      if (parsed) {
        buf = parsed.rest;
        return parsed.answer;
      }
      if (ended) throw new Error(`the connection closed without an answer to ${what}`);
      if (Date.now() > deadline) throw new Error(`no answer to ${what} within 2 s`);
      await new Promise<void>((resolve) => { waiting = resolve; setTimeout(resolve, 100); });
    }
  };
  try {
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
    const head = Object.entries({ host: `${hostname}:${port}`, ...headers, ...(chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(size) }) });
    socket.write(`${method} ${path} HTTP/1.1\r\n${head.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
    const piece = Buffer.alloc(64 * 1024, 'a');
    let stop = false;
    const written = (async () => {
      for (let left = size; left > 0 && !stop && !ended; left -= piece.length) {
        const n = Math.min(left, piece.length);
        const ok = socket.write(chunked ? Buffer.concat([Buffer.from(`${n.toString(16)}\r\n`), piece.subarray(0, n), Buffer.from('\r\n')]) : piece.subarray(0, n));
        if (!ok) await new Promise((resolve) => { socket.once('drain', resolve); socket.once('close', resolve); });
      }
      if (chunked && !stop && !ended) socket.write('0\r\n\r\n');
    })();
    const first = await answer(`${method} ${path}`);
    if (/close/i.test(first.headers.connection ?? '')) {
      stop = true;
      const res = await fetch(`${idjag.url}/healthz`);
      return { first, next: { status: res.status, headers: {}, body: await res.text() } };
    }
    // a keep-alive answer: the rest of the body goes on the wire, then the next request
    await written;
    socket.write(`GET /healthz HTTP/1.1\r\nhost: ${hostname}:${port}\r\n\r\n`);
    return { first, next: await answer('the next request on the connection') };
  } finally {
    socket.destroy();
  }
}

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const JSON_TYPE = { 'content-type': 'application/json' };
const KB = 1024;

const routes: [string, string, string, number, () => Record<string, string>, number[]][] = [
  // oidc-provider's endpoints: its own 56 KiB limit, answered 400 invalid_request
  ['the token endpoint', 'POST', '/token', 200 * KB, () => FORM, [400]],
  ['introspection', 'POST', '/token/introspection', 200 * KB, () => FORM, [400]],
  ['revocation', 'POST', '/token/revocation', 200 * KB, () => FORM, [400]],
  ['userinfo', 'POST', '/me', 200 * KB, () => FORM, [400]],
  ['pushed authorization requests', 'POST', '/request', 200 * KB, () => FORM, [400]],
  ['the logout confirmation', 'POST', '/session/end/confirm', 200 * KB, () => FORM, [400]],
  // the login and consent forms: 16 KB
  ['the login form', 'POST', '/interaction/{uid}/login', 200 * KB, () => ({ ...FORM, cookie: interactionCookie }), [413]],
  ['the consent form', 'POST', '/interaction/{uid}/confirm', 200 * KB, () => ({ ...FORM, cookie: interactionCookie }), [413]],
  ['the login abort form', 'POST', '/interaction/{uid}/abort', 200 * KB, () => ({ ...FORM, cookie: interactionCookie }), [413]],
  // the admin API: 64 KB, the import 2 MB
  ['the admin API (POST)', 'POST', '/admin/api/rules', 200 * KB, () => ({ ...JSON_TYPE, authorization: `Bearer ${adminApiToken}` }), [413]],
  ['the admin API (PATCH)', 'PATCH', '/admin/api/rules/engineering-todo', 200 * KB, () => ({ ...JSON_TYPE, authorization: `Bearer ${adminApiToken}` }), [413]],
  ['the admin API (PUT)', 'PUT', '/admin/api/groups/engineering/members', 200 * KB, () => ({ ...JSON_TYPE, authorization: `Bearer ${adminApiToken}` }), [413]],
  ['the admin API import', 'POST', '/admin/api/import', 2600 * KB, () => ({ ...JSON_TYPE, authorization: `Bearer ${adminApiToken}` }), [413]],
  ['the admin API, no token', 'POST', '/admin/api/rules', 200 * KB, () => JSON_TYPE, [401]],
  // the admin UI's forms: 64 KB (parsed only for a signed-in admin; anyone else is sent to sign in first)
  ['an admin UI form', 'POST', '/admin/rules', 200 * KB, () => ({ ...FORM, cookie: adminUiCookie }), [413]],
  ['an admin UI form, signed out', 'POST', '/admin/rules', 200 * KB, () => FORM, [303]],
  // the demo parties
  ['the demo Resource AS token endpoint', 'POST', '/demo/as/token', 200 * KB, () => FORM, [413]],
  ['the demo MCP server', 'POST', '/demo/mcp', 5 * KB * KB, () => ({ ...JSON_TYPE, accept: 'application/json, text/event-stream', authorization: `Bearer ${mcpToken}` }), [413]],
  ['the demo MCP server, no token', 'POST', '/demo/mcp', 5 * KB * KB, () => JSON_TYPE, [401]],
  // the playground's forms: 16 KB, before the CSRF check reads the token in them
  ['a playground form', 'POST', '/playground/exchange', 200 * KB, () => FORM, [413]],
  // routes that read no body: it is never buffered, and the answer does not wait for it
  ['health', 'POST', '/healthz', 200 * KB, () => FORM, [404, 405]],
  ['health, 5 MB', 'POST', '/healthz', 5 * KB * KB, () => FORM, [404, 405]],
  ['the metrics', 'POST', '/metrics', 200 * KB, () => FORM, [405]],
  ['the demo AS, 5 MB', 'POST', '/demo/as/token', 5 * KB * KB, () => FORM, [413]],
  ['the JWKS', 'POST', '/jwks', 200 * KB, () => FORM, [404, 405]],
  ['discovery', 'POST', '/.well-known/openid-configuration', 200 * KB, () => FORM, [404, 405]],
  ['the client diagnostics view', 'POST', '/conformance/clients/demo-agent', 200 * KB, () => FORM, [404, 405]],
  ['an asset', 'POST', '/assets/idjag.css', 200 * KB, () => FORM, [404, 405]],
  ['the login page', 'POST', '/interaction/{uid}', 200 * KB, () => FORM, [404, 405]],
];

describe.each([false, true])('an oversized body (chunked: %s)', (chunked) => {
  test.each(routes)('%s: %s %s', async (_name, method, path, size, headers, statuses) => {
    const { first, next } = await oversized(method, path.replace('{uid}', interactionUid), size, chunked, headers());
    expect(statuses).toContain(first.status);
    expect(first.body).not.toMatch(/\n\s+at\s|node_modules|\.(ts|js):\d+/);
    // and the connection is not left blocked by the rest of the body
    expect(next.status).toBe(200);
  });
});
