/**
 * Property-based tests of the token endpoint (fast-check): random token-exchange requests, each a real HTTP
 * request to one server started once.
 *
 * A request is built from a valid one (any client authentication, subject token, target, scope, parameter
 * order, percent-encoding, charset and transfer encoding the IdP must accept, with unknown parameters mixed in)
 * to which a hostile request adds at least one fatal change: a required parameter missing, replaced, repeated
 * or wrongly encoded; an actor_token without its type (or the reverse), malformed authorization_details; a broken subject token (truncated, padded, a character changed,
 * a random JWT, a token signed with the real key whose claims are wrong); failed, missing, malformed or doubled
 * client authentication; a wrong target or scope; oversized values (40 KB parameters, a thousand resources or
 * scopes); a wrong content type; an oversized body; another method. Every answer: no 5xx, no stack trace. A
 * valid request gets an ID-JAG that verifies and has its audit row; a hostile one gets a 4xx and no token, and
 * the audit log shows nothing issued. (A form body's charset parameter is ignored: it is UTF-8 whatever it says,
 * as WHATWG's parser has it, so a valid request may carry any.)
 */
import fc from 'fast-check';
import { sql } from 'kysely';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, importJWK, jwtVerify, SignJWT, type JSONWebKeySet, type JWK, type JWTPayload } from 'jose';
import type { Config } from '../src/config/index.ts';
import { basic, signIn } from './helpers/browser.ts';
import { ID_JAG, ID_TOKEN, REFRESH_TOKEN, TODO_AS, TODO_MCP, TOKEN_EXCHANGE } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// HARDENING_RUNS=5000 npm test -- test/hardening-input.test.ts for a longer soak
const RUNS = Number(process.env.HARDENING_RUNS ?? 400);
// The token endpoint's per-client limit on at its default, the per-user one off: this test sends one user's
// requests by the hundred, past the per-user limit (300 a minute by default).
const UNREACHABLE_RATE_LIMIT = { tokenUserRateLimit: 0 } as Partial<Config>;
/** oidc-provider's own body limit on its endpoints (lib/shared/selective_body.js) */
const PROVIDER_BODY_LIMIT = 56 * 1024;

let idjag: TestServer;
let alice: Awaited<ReturnType<typeof signIn>>;
let idTokenKey: { kid: string; key: Awaited<ReturnType<typeof importJWK>> };
let jwks: ReturnType<typeof createLocalJWKSet>;

beforeAll(async () => {
  idjag = await startTestServer(UNREACHABLE_RATE_LIMIT);
  alice = await signIn(idjag.url, { scope: 'openid email profile offline_access', prompt: 'consent' });
  const row = await idjag.database.db.selectFrom('signing_keys').select(['kid', 'private_jwk'])
    .where('purpose', '=', 'id_token').where('retired_at', 'is', null).executeTakeFirstOrThrow();
  idTokenKey = { kid: row.kid, key: await importJWK(JSON.parse(row.private_jwk) as JWK, 'RS256') };
  jwks = createLocalJWKSet(await (await fetch(`${idjag.url}/jwks`)).json() as JSONWebKeySet);
});
afterAll(() => idjag.dispose());

// ---------------------------------------------------------------------------------------------------------
// The request model

type Value = string | { raw: Buffer };
interface Req {
  method: string;
  params: [string, Value][];
  /** Authorization header, if any */
  authorization?: string;
  contentType?: string;
  encoding: 'standard' | 'every-byte' | 'lowercase-hex';
  space: '+' | '%20';
  chunked: boolean;
  /** send the parameters as a JSON object instead of a form */
  json?: boolean;
  /** where the ID-JAG must be addressed, when the request is valid */
  audience: string;
  /** the fatal changes applied (empty: a valid request) */
  fatal: string[];
}

const DEMO_AGENT = { id: 'demo-agent', secret: 'demo-agent-secret' };
const REQUIRED = ['grant_type', 'requested_token_type', 'subject_token', 'subject_token_type', 'audience'] as const;

const get = (r: Req, name: string) => r.params.find(([k]) => k === name)?.[1];
/** the value as text, when it is present and not raw bytes (an earlier change may have removed or mangled it) */
const text = (r: Req, name: string): string | undefined => { const v = get(r, name); return typeof v === 'string' && v !== '' ? v : undefined; };
const set = (r: Req, name: string, value: Value) => {
  const i = r.params.findIndex(([k]) => k === name);
  if (i < 0) r.params.push([name, value]);
  else r.params[i] = [name, value];
};
const drop = (r: Req, name: string) => { r.params = r.params.filter(([k]) => k !== name); };

/** application/x-www-form-urlencoded, in three spellings a parser must all accept. */
function encode(s: string, r: Req): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b);
    if (r.encoding !== 'every-byte' && /[A-Za-z0-9*\-._]/.test(c)) out += c;
    else if (b === 0x20 && r.space === '+') out += '+';
    else out += `%${r.encoding === 'lowercase-hex' ? b.toString(16).padStart(2, '0') : b.toString(16).padStart(2, '0').toUpperCase()}`;
  }
  return out;
}

function body(r: Req): Buffer {
  if (r.json) return Buffer.from(JSON.stringify(Object.fromEntries(r.params.map(([k, v]) => [k, typeof v === 'string' ? v : v.raw.toString('latin1')]))));
  return Buffer.concat(r.params.flatMap(([k, v], i) => [
    Buffer.from(`${i ? '&' : ''}${encode(k, r)}=`),
    typeof v === 'string' ? Buffer.from(encode(v, r)) : v.raw,
  ]));
}

async function send(r: Req): Promise<{ status: number; text: string; headers: Headers }> {
  const headers: Record<string, string> = {};
  if (r.authorization !== undefined) headers.authorization = r.authorization;
  if (r.contentType !== undefined) headers['content-type'] = r.contentType;
  const bytes = body(r);
  let init: RequestInit;
  if (r.method === 'GET' || r.method === 'HEAD') {
    init = { method: r.method, headers };
  } else if (r.chunked) {
    // no Content-Length: the server learns the size only by reading
    const chunks = [bytes.subarray(0, bytes.length >> 1), bytes.subarray(bytes.length >> 1)];
    init = { method: r.method, headers, duplex: 'half', body: new ReadableStream({ start(c) { for (const chunk of chunks) c.enqueue(chunk); c.close(); } }) };
  } else {
    init = { method: r.method, headers, body: bytes };
  }
  const url = r.method === 'GET' ? `${idjag.url}/token?${bytes.toString('latin1')}` : `${idjag.url}/token`;
  const res = await fetch(url, init);
  return { status: res.status, text: await res.text(), headers: res.headers };
}

// ---------------------------------------------------------------------------------------------------------
// Valid requests

const extraParam = fc.tuple(fc.stringMatching(/^x_[a-z0-9_]{1,12}$/), fc.string({ unit: 'binary', maxLength: 40 }));
const noiseClaims = fc.record({
  auth_time: fc.oneof(fc.integer({ min: 0, max: 2 ** 40 }), fc.jsonValue({ maxDepth: 1 })),
  amr: fc.jsonValue({ maxDepth: 2 }),
  acr: fc.jsonValue({ maxDepth: 1 }),
  nonce: fc.string({ unit: 'binary', maxLength: 30 }),
  x_claim: fc.jsonValue({ maxDepth: 2 }),
}, { requiredKeys: [] });

const validArb = fc.record({
  auth: fc.constantFrom('basic', 'post'),
  subject: fc.constantFrom('id_token', 'refresh_token', 'resigned_id_token'),
  noise: noiseClaims,
  target: fc.constantFrom('todo', 'todo-alias', 'todo-resource-twice', 'demo'),
  scope: fc.option(fc.subarray(['todos.read', 'todos.write'], { minLength: 1 }), { nil: undefined }),
  extras: fc.array(extraParam, { maxLength: 3 }),
  order: fc.array(fc.nat(), { minLength: 12, maxLength: 12 }),
  encoding: fc.constantFrom('standard', 'every-byte', 'lowercase-hex'),
  space: fc.constantFrom('+', '%20'),
  contentType: fc.constantFrom(
    'application/x-www-form-urlencoded',
    'application/x-www-form-urlencoded; charset=utf-8',
    'application/x-www-form-urlencoded;charset=UTF-8',
    // a form body is UTF-8 whatever its label says (the media type defines no charset; WHATWG's parser ignores it)
    'application/x-www-form-urlencoded; charset=iso-8859-1',
    'application/x-www-form-urlencoded; charset=utf-16le',
    'application/x-www-form-urlencoded; charset=bogus',
    // media types are case-insensitive
    'Application/X-WWW-Form-URLEncoded',
  ),
  chunked: fc.boolean(),
});
type Valid = typeof validArb extends fc.Arbitrary<infer T> ? T : never;

async function buildValid(v: Valid): Promise<Req> {
  const demo = idjag.demo!;
  const [audience, canonical, resources] = v.target === 'demo' ? [demo.asIssuer, demo.asIssuer, [demo.mcpResource]]
    : v.target === 'todo-alias' ? ['urn:example:todo', TODO_AS, [TODO_MCP]]
      : v.target === 'todo-resource-twice' ? [TODO_AS, TODO_AS, [TODO_MCP, TODO_MCP]] : [TODO_AS, TODO_AS, [TODO_MCP]];
  const subjectToken = v.subject === 'refresh_token' ? alice.tokens.refresh_token as string
    : v.subject === 'resigned_id_token' ? await resign({ ...decodeJwt(alice.tokens.id_token), ...v.noise }) : alice.tokens.id_token as string;
  const params: [string, Value][] = [
    ['grant_type', TOKEN_EXCHANGE],
    ['requested_token_type', ID_JAG],
    ['subject_token', subjectToken],
    ['subject_token_type', v.subject === 'refresh_token' ? REFRESH_TOKEN : ID_TOKEN],
    ['audience', audience],
    ...resources.map((r): [string, Value] => ['resource', r]),
    ...(v.scope ? [['scope', v.scope.join(' ')] as [string, Value]] : []),
    ...(v.auth === 'post' ? [['client_id', DEMO_AGENT.id], ['client_secret', DEMO_AGENT.secret]] as [string, Value][] : []),
    ...v.extras,
  ];
  // a shuffle: parameter order means nothing
  const order = params.map((p, i) => ({ p, k: v.order[i % v.order.length]! * 31 + i }));
  order.sort((a, b) => a.k - b.k);
  return {
    method: 'POST',
    params: order.map((o) => o.p),
    ...(v.auth === 'basic' ? { authorization: basic(DEMO_AGENT.id, DEMO_AGENT.secret) } : {}),
    contentType: v.contentType,
    encoding: v.encoding,
    space: v.space,
    chunked: v.chunked,
    audience: canonical,
    fatal: [],
  };
}

const resign = (claims: JWTPayload, header: Record<string, unknown> = {}) =>
  new SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: idTokenKey.kid, ...header } as never).sign(idTokenKey.key);

// ---------------------------------------------------------------------------------------------------------
// Fatal changes: each alone makes a valid request invalid

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const nowSec = () => Math.floor(Date.now() / 1000);
const randomText = fc.oneof(fc.string({ unit: 'binary', maxLength: 60 }), fc.string({ unit: 'grapheme-ascii', maxLength: 60 }), fc.webUrl());
const notOneOf = (values: string[]) => randomText.filter((s) => s !== '' && !values.includes(s));
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

type Mutation = { name: string; apply: (r: Req) => void | Promise<void> };
const m = (name: string, apply: Mutation['apply']): Mutation => ({ name, apply });

const accepted: Record<(typeof REQUIRED)[number], () => string[]> = {
  grant_type: () => [TOKEN_EXCHANGE],
  requested_token_type: () => [ID_JAG],
  subject_token: () => [alice.tokens.id_token, alice.tokens.refresh_token],
  subject_token_type: () => [ID_TOKEN, REFRESH_TOKEN],
  audience: () => [TODO_AS, 'urn:example:todo', idjag.demo!.asIssuer],
};

/** Subject token corruptions that apply to an ID Token (a JWT) */
const brokenJwt: fc.Arbitrary<Mutation> = fc.oneof(
  fc.nat().map((n) => m('subject token truncated', (r) => {
    const t = text(r, 'subject_token');
    if (t) set(r, 'subject_token', t.slice(0, n % t.length));
  })),
  fc.tuple(fc.nat(), fc.nat()).map(([at, by]) => m('one character of the subject token changed', (r) => {
    const t = text(r, 'subject_token');
    if (!t || t.length < 2) return;
    // not the signature's last character: its unused low bits may decode to the same signature
    const i = at % (t.length - 1);
    if (t[i] === '.') return set(r, 'subject_token', `${t.slice(0, i)}${t.slice(i + 1)}`);
    const alphabet = B64URL.replace(t[i]!, '');
    set(r, 'subject_token', `${t.slice(0, i)}${alphabet[by % alphabet.length]}${t.slice(i + 1)}`);
  })),
  fc.constantFrom('=', '==', '.', ' ', '\n', '%', '\u0000', '.e30', 'A', 'Qw', '_-_').map((suffix) => m(`subject token with ${JSON.stringify(suffix)} appended`, (r) => {
    const t = text(r, 'subject_token');
    if (t) set(r, 'subject_token', `${t}${suffix}`);
  })),
  fc.tuple(fc.jsonValue({ maxDepth: 2 }), fc.jsonValue({ maxDepth: 2 }), fc.uint8Array({ maxLength: 300 })).map(([h, p, s]) => m('a random JWT', (r) => {
    set(r, 'subject_token', `${b64(h)}.${b64(p)}.${Buffer.from(s).toString('base64url')}`);
  })),
  fc.tuple(fc.constantFrom('RS256', 'none', 'HS256', 'ES256', 'PS256', 'RS512'), fc.uint8Array({ maxLength: 300 })).map(([alg, s]) => m(`a random signature under alg ${alg} and the real kid`, (r) => {
    const [, p] = alice.tokens.id_token.split('.');
    set(r, 'subject_token', `${b64({ alg, kid: idTokenKey.kid, typ: 'JWT' })}.${p}.${Buffer.from(s).toString('base64url')}`);
  })),
  // signed with the real key, one claim wrong: what the signature check alone cannot catch
  fc.oneof(
    fc.jsonValue({ maxDepth: 1 }).filter((v) => v !== idjag.issuer).map((iss) => ['iss', iss] as const),
    fc.oneof(fc.jsonValue({ maxDepth: 1 }).filter((v) => v !== 'demo-agent' && !(Array.isArray(v) && v.includes('demo-agent'))), fc.constant(['demo-agent', 'partner-app'])).map((aud) => ['aud', aud] as const),
    fc.jsonValue({ maxDepth: 1 }).filter((v) => typeof v !== 'number' || v + 15 <= nowSec()).map((exp) => ['exp', exp] as const),
    fc.jsonValue({ maxDepth: 1 }).filter((v) => typeof v !== 'number' || v > nowSec() + 60).map((iat) => ['iat', iat] as const),
    fc.jsonValue({ maxDepth: 1 }).filter((v) => v !== decodeJwt(alice.tokens.id_token).sub).map((sub) => ['sub', sub] as const),
  ).map(([claim, value]) => m(`real key, ${claim} ${JSON.stringify(value)?.slice(0, 40)}`, async (r) => {
    const claims: Record<string, unknown> = { ...decodeJwt(alice.tokens.id_token), [claim]: value };
    if (value === undefined || value === null) delete claims[claim];
    delete claims.azp;
    set(r, 'subject_token', await resign(claims as JWTPayload));
  })),
);

const fatalArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.constantFrom(...REQUIRED).map((p) => m(`${p} missing`, (r) => drop(r, p))),
  fc.constantFrom(...REQUIRED).chain((p) => notOneOf(accepted[p]()).map((v) => m(`${p} replaced by ${JSON.stringify(v).slice(0, 40)}`, (r) => set(r, p, v)))),
  fc.constantFrom('authorization_code', 'refresh_token', 'client_credentials', 'password', 'urn:ietf:params:oauth:grant-type:jwt-bearer',
    'urn:ietf:params:oauth:grant-type:device_code', 'urn:ietf:params:oauth:grant-type:token-exchange ', 'URN:IETF:PARAMS:OAUTH:GRANT-TYPE:TOKEN-EXCHANGE')
    .map((g) => m(`grant_type ${g}`, (r) => set(r, 'grant_type', g))),
  // the type the subject token is not: a JWT is never a refresh token, an opaque string never an ID Token
  fc.constant(m('subject_token_type naming the other kind of token', (r) => set(r, 'subject_token_type', text(r, 'subject_token')?.includes('.') ? REFRESH_TOKEN : ID_TOKEN))),
  fc.tuple(fc.constantFrom(...REQUIRED, 'scope'), fc.option(randomText, { nil: undefined })).map(([p, other]) => m(`${p} repeated`, (r) => {
    if (p === 'scope' && get(r, 'scope') === undefined) set(r, 'scope', 'todos.read');
    const value = other ?? get(r, p);
    if (value !== undefined) r.params.push([p, value]);
  })),
  // an actor_token without its type, or the type without the token (RFC 8693 §2.1); authorization_details that are
  // not a JSON array of objects of a type the rule allows (RFC 9396)
  fc.tuple(fc.constantFrom('actor_token', 'actor_token_type', 'authorization_details'), randomText.filter((s) => s !== ''))
    .map(([p, v]) => m(`${p} alone or malformed`, (r) => {
      if (p === 'actor_token') drop(r, 'actor_token_type');
      if (p === 'actor_token_type') drop(r, 'actor_token');
      r.params.push([p, v]);
    })),
  fc.tuple(fc.constantFrom(...REQUIRED), fc.constantFrom<Value>('%', '%zz', '%E0%A4', '%C0%AF', { raw: Buffer.from([0xff, 0xfe]) }, { raw: Buffer.from([0xc3]) }))
    .map(([p, garbage]) => m(`${p} wrongly percent- or UTF-8-encoded`, (r) => {
      const i = r.params.findIndex(([k]) => k === p);
      const v = r.params[i]?.[1];
      if (v === undefined) return;
      // the garbage goes in as is, after the value's own encoding
      const raw = Buffer.concat([typeof v === 'string' ? Buffer.from(encode(v, r)) : v.raw, typeof garbage === 'string' ? Buffer.from(garbage) : garbage.raw]);
      r.params[i] = [p, { raw }];
    })),
  // the subject token: only a JWT can be truncated into another JWT shape; a refresh token becomes another opaque string
  fc.tuple(brokenJwt, fc.nat()).map(([mutation, n]) => m(mutation.name, async (r) => {
    if (get(r, 'subject_token_type') === REFRESH_TOKEN) {
      const t = text(r, 'subject_token');
      // Every change ends in '~', which no real refresh token contains: two such changes cannot cancel out
      // (an append then a truncation back to the original length would otherwise restore the valid token).
      if (t) set(r, 'subject_token', n % 2 ? `${t.slice(0, n % t.length)}~` : `${t}${B64URL[n % 64]}~`);
    } else {
      await mutation.apply(r);
    }
  })),
  // client authentication
  notOneOf([DEMO_AGENT.secret]).map((s) => m('a wrong client secret', (r) => {
    drop(r, 'client_secret'); drop(r, 'client_id');
    r.authorization = basic(DEMO_AGENT.id, s);
  })),
  fc.constant(m('no client authentication', (r) => {
    drop(r, 'client_secret'); drop(r, 'client_id');
    delete r.authorization;
  })),
  fc.string({ unit: 'grapheme-ascii', maxLength: 80 }).map((h) => m('a malformed Authorization header only', (r) => {
    drop(r, 'client_secret'); drop(r, 'client_id');
    r.authorization = h.replace(/[\r\n]/g, ' ');
  })),
  fc.constant(m('client authentication twice (Basic and in the body)', (r) => {
    r.authorization = basic(DEMO_AGENT.id, DEMO_AGENT.secret);
    set(r, 'client_id', DEMO_AGENT.id);
    set(r, 'client_secret', DEMO_AGENT.secret);
  })),
  fc.constantFrom(
    { id: 'demo-public', secret: undefined }, { id: 'partner-app', secret: 'partner-app-secret' }, { id: 'idjag-admin-cli', secret: 'idjag-admin-cli-secret' },
  ).map((c) => m(`client ${c.id}`, (r) => {
    drop(r, 'client_secret'); drop(r, 'client_id');
    if (c.secret) r.authorization = basic(c.id, c.secret);
    else { delete r.authorization; set(r, 'client_id', c.id); }
  })),
  // target and scope
  fc.webUrl({ withFragments: true }).filter((u) => u !== TODO_MCP).map((u) => m(`resource ${u}`, (r) => {
    drop(r, 'resource');
    r.params.push(['resource', u]);
  })),
  fc.constant(m('the demo MCP server under the todo audience', (r) => {
    drop(r, 'resource');
    r.params.push(['resource', idjag.demo!.mcpResource]);
    set(r, 'audience', TODO_AS);
  })),
  fc.array(fc.oneof(fc.stringMatching(/^[a-z.]{1,12}$/), fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 12 })), { minLength: 1, maxLength: 4 })
    // (a scope of spaces only is no scope: the defaults, as when none is sent)
    .filter((scopes) => scopes.join(' ').split(' ').some(Boolean) && !scopes.some((s) => s.split(' ').some((w) => w === 'todos.read' || w === 'todos.write')))
    .map((scopes) => m(`scope ${JSON.stringify(scopes.join(' '))}`, (r) => set(r, 'scope', scopes.join(' ')))),
  // the body itself
  fc.constantFrom('text/plain', 'application/json', 'multipart/form-data; boundary=x', 'application/xml', 'application/octet-stream',
    'application/x-www-form-urlencoded-x', 'x-www-form-urlencoded', 'form-urlencoded', '', undefined)
    .map((ct) => m(`content type ${JSON.stringify(ct)}`, (r) => {
      if (ct === undefined) delete r.contentType;
      else r.contentType = ct;
    })),
  fc.constant(m('the parameters as a JSON body', (r) => {
    r.contentType = 'application/json';
    r.json = true;
  })),
  fc.integer({ min: PROVIDER_BODY_LIMIT + 1, max: 3 * PROVIDER_BODY_LIMIT }).map((size) => m(`a ${size}-byte body`, (r) => {
    const length = body(r).length;
    r.params.push(['x_padding', 'a'.repeat(Math.max(1, size - length - '&x_padding='.length))]);
  })),
  fc.constantFrom('GET', 'PUT', 'PATCH', 'DELETE').map((method) => m(`method ${method}`, (r) => { r.method = method; })),
  // oversized values, inside the body limit
  fc.integer({ min: 4_000, max: 40_000 }).map((n) => m(`a ${n}-character JWT as subject token`, (r) => {
    set(r, 'subject_token', `${b64({ alg: 'RS256', kid: idTokenKey.kid })}.${'A'.repeat(n)}.${'B'.repeat(342)}`);
  })),
  fc.tuple(fc.constantFrom('audience', 'requested_token_type', 'subject_token_type'), fc.integer({ min: 4_000, max: 40_000 }))
    .map(([p, n]) => m(`a ${n}-character ${p}`, (r) => set(r, p, `https://${'a'.repeat(n)}.example`))),
  fc.integer({ min: 100, max: 1_200 }).map((n) => m(`${n} resources`, (r) => {
    drop(r, 'resource');
    for (let i = 0; i < n; i++) r.params.push(['resource', `https://mcp${i}.example/mcp`]);
  })),
  fc.integer({ min: 100, max: 4_000 }).map((n) => m(`${n} scopes`, (r) => set(r, 'scope', Array.from({ length: n }, (_, i) => `s${i}`).join(' ')))),
);

/** A valid request with 1 to 3 fatal changes. */
const hostileArb = fc.tuple(validArb, fc.array(fatalArb, { minLength: 1, maxLength: 3 }));

// ---------------------------------------------------------------------------------------------------------

const issuedCount = async () => Number((await idjag.database.db.selectFrom('audit_log').where('decision', '=', 'issued')
  .select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
const issuedRow = (jti: string) => idjag.database.db.selectFrom('audit_log').select(['client_id', 'audience'])
  .where(sql<string>`coalesce(nullif(jti, ''), id)`, '=', jti).where('decision', '=', 'issued').executeTakeFirst();
const STACK = /(\\n|\n)\s+at\s|node:internal|node_modules\/|\.(ts|js|mjs):\d+:\d+/;

const stats = { valid: 0, hostile: 0, statuses: new Map<number, number>() };

test(`${RUNS} random token requests, valid and hostile mixed: never a 5xx or a stack trace; valid ones always get a verifiable, audited ID-JAG; hostile ones never get a token`, async () => {
  await fc.assert(fc.asyncProperty(fc.oneof({ weight: 1, arbitrary: validArb.map((v) => [v, []] as const) }, { weight: 3, arbitrary: hostileArb }), async ([v, fatal]) => {
    const r = await buildValid(v);
    for (const mutation of fatal) {
      r.fatal.push(mutation.name);
      await mutation.apply(r);
    }
    const issuedBefore = await issuedCount();
    const res = await send(r);
    stats.statuses.set(res.status, (stats.statuses.get(res.status) ?? 0) + 1);
    const context = `${r.fatal.join(', ') || 'valid'}: ${res.status} ${res.text.slice(0, 300)}`;

    if (res.status >= 500) throw new Error(`5xx for ${context}`);
    if (STACK.test(res.text)) throw new Error(`stack trace in ${context}`);

    if (r.fatal.length === 0) {
      stats.valid++;
      if (res.status !== 200) throw new Error(`a valid request was refused: ${context}`);
      const json = JSON.parse(res.text) as Record<string, unknown>;
      expect(json).toMatchObject({ issued_token_type: ID_JAG, token_type: 'N_A', expires_in: expect.any(Number) });
      expect(json).not.toHaveProperty('refresh_token');
      expect(res.headers.get('cache-control')).toBe('no-store');
      const { payload, protectedHeader } = await jwtVerify(json.access_token as string, jwks, { issuer: idjag.issuer, audience: r.audience, algorithms: ['ES256'] });
      expect(protectedHeader.typ).toBe('oauth-id-jag+jwt');
      expect(await issuedRow(payload.jti!)).toEqual({ client_id: 'demo-agent', audience: get(r, 'audience') });
      expect(await issuedCount()).toBe(issuedBefore + 1);
    } else {
      stats.hostile++;
      if (res.status < 400) throw new Error(`a hostile request was not refused: ${context}`);
      if (/access_token|refresh_token|id_token"|eyJ[A-Za-z0-9_-]+\.eyJ/.test(res.text.replace(/"error_description":"(?:[^"\\]|\\.)*"/, ''))) {
        throw new Error(`a token in the answer to ${context}`);
      }
      if (await issuedCount() !== issuedBefore) throw new Error(`something was issued for ${context}`);
      if (r.method === 'POST') {
        // the provider's JSON error, uncacheable
        const json = JSON.parse(res.text) as Record<string, unknown>;
        expect(json.error).toEqual(expect.any(String));
        expect(res.headers.get('cache-control')).toBe('no-store');
      }
    }
  }), { numRuns: RUNS });

  // both kinds really ran, and the server is still well
  expect(stats.valid).toBeGreaterThan(RUNS / 8);
  expect(stats.hostile).toBeGreaterThan(RUNS / 2);
  expect((await fetch(`${idjag.url}/healthz`)).status).toBe(200);
}, 120_000);

test('the provider\'s own body limit at the token endpoint: a valid exchange padded to just under 56 KiB is issued, one byte over is refused (400), buffered or chunked', async () => {
  const base = await buildValid({
    auth: 'basic', subject: 'id_token', noise: {}, target: 'todo', scope: undefined, extras: [], order: Array(12).fill(0),
    encoding: 'standard', space: '+', contentType: 'application/x-www-form-urlencoded', chunked: false,
  });
  const padded = (size: number, chunked: boolean): Req => {
    const r = { ...base, params: [...base.params], chunked };
    r.params.push(['x_padding', 'a'.repeat(size - body(base).length - '&x_padding='.length)]);
    expect(body(r).length).toBe(size);
    return r;
  };
  for (const chunked of [false, true]) {
    const under = await send(padded(PROVIDER_BODY_LIMIT, chunked));
    expect(under.status).toBe(200);
    expect(decodeProtectedHeader(JSON.parse(under.text).access_token).typ).toBe('oauth-id-jag+jwt');
    const over = await send(padded(PROVIDER_BODY_LIMIT + 1, chunked));
    expect({ status: over.status, body: JSON.parse(over.text) }).toEqual({ status: 400, body: { error: 'invalid_request', error_description: 'failed to parse the request body' } });
  }
});
