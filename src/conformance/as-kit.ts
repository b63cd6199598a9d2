import { randomUUID } from 'node:crypto';
import { DpopSession } from '@modelcontextprotocol/client';
import { generateKeyPair, importJWK, SignJWT, type JWK, type JWTHeaderParameters } from 'jose';
import { ID_JAG_TYP } from '../exchange/mint.ts';

/**
 * The conformance kit for Resource AS authors (draft §4.4, RFC 7523, the MCP extension): idjag, acting as the
 * IdP the AS trusts, mints one valid ID-JAG and a series of deliberately faulty ones, presents each with the
 * JWT-bearer grant at the AS's token endpoint, and reports what the AS answered against what the spec expects.
 *
 * It only talks HTTP to the AS (no database, no koa), so the CLI and the admin UI run the very same code.
 * With `dpop`, it also checks how the AS treats ID-JAGs bound to a DPoP key (`cnf.jkt`, draft §9.8.1.2): the
 * client's proofs are made by the official MCP client's DPoP implementation (`DpopSession`).
 */

export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

/** Names that cannot belong to the AS under test: `.invalid` is reserved (RFC 2606), so no real party answers to them. */
export const OTHER_AS = 'https://other-as.conformance.invalid';
export const OTHER_IDP = 'https://other-idp.conformance.invalid';
export const OTHER_CLIENT = 'idjag-conformance-other-client';
export const OTHER_RESOURCE = 'https://other-mcp.conformance.invalid/mcp';
/** requested in the scope case when the target names fewer than two scopes, so there is no real one to withhold */
export const UNGRANTED_SCOPE = 'idjag-conformance.not-granted';

/** ID-JAGs live 300 s, as idjag's and the draft's examples do. */
const LIFETIME = 300;
/** Far beyond any clock skew an AS may reasonably allow (idjag's demo AS allows 30 s; 60 to 120 s is common). */
const TIME_OFFSET = 600;
const DEFAULT_TIMEOUT_MS = 15_000;

export interface ConformanceIdp {
  /** the `iss` of every ID-JAG: the IdP the AS trusts */
  issuer: string;
  /** the key the AS finds in that IdP's JWKS; idjag's is its active `id_jag` key (src/oidc/keys.ts) */
  signingKey: { kid: string; alg: string; privateJwk: JWK };
}

export interface AsConformanceOptions {
  /** the Resource AS's token endpoint (JWT-bearer grant) */
  tokenEndpoint: string;
  /** the Resource AS's issuer identifier (RFC 8414): the ID-JAG's `aud` */
  issuer: string;
  /** the client's credentials at the Resource AS (client_secret_basic); also the ID-JAG's `client_id` */
  clientId: string;
  clientSecret: string;
  /** the MCP server the tokens are for: the ID-JAG's `resource` and the request's `resource` */
  resource?: string;
  /** space-separated scopes the ID-JAG grants; unset: the AS metadata's `scopes_supported`, when it can be read */
  scope?: string;
  /** the ID-JAG's `sub` (default `idjag-conformance-kit`) */
  subject?: string;
  /** the ID-JAG's `email`, for an AS that maps users by email */
  email?: string;
  idp: ConformanceIdp;
  /** also run the DPoP cases (DPOP_CASES): ID-JAGs bound to the client's DPoP key */
  dpop?: boolean;
  /** default: the global fetch */
  fetch?: typeof fetch;
  /** per request, default 15 s */
  timeoutMs?: number;
}

export type Expectation = 'accepted' | 'rejected';

export interface RequestSummary {
  /** the ID-JAG's protected header and claims, decoded (the assertion itself is shortened) */
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
  assertion: string;
  /** form parameters other than the assertion */
  params: Record<string, string>;
  clientAuth: string;
  /** the DPoP cases: which key signed the request's DPoP proof, if any */
  dpop?: string;
}

export interface Exchange {
  /** null when no HTTP answer came (connection refused, timeout) */
  status: number | null;
  /** JSON bodies with tokens shortened; other bodies as (shortened) text */
  body: unknown;
}

export interface CaseResult extends Exchange {
  id: string;
  title: string;
  expected: Expectation;
  /** a failed required case makes the AS non-conformant; the others are advice */
  required: boolean;
  section: string;
  request: RequestSummary;
  /** the `error` of an OAuth error answer */
  error: string | null;
  /** in words: "accepted (200)", "rejected (400 invalid_grant)", "no answer: ..." */
  actual: string;
  pass: boolean;
  /** a pass that deviates from the texts' wording (e.g. another error code than invalid_grant) */
  warnings: string[];
  /** why a verdict is what it is, when the status alone does not say */
  note: string | null;
  /** the replay cases: the first presentation (of the same ID-JAG, or with the same DPoP proof), which must be accepted */
  first?: Exchange;
}

export interface AsConformanceReport {
  target: {
    tokenEndpoint: string;
    issuer: string;
    clientId: string;
    resource: string | undefined;
    scope: string | undefined;
    scopeSource: 'option' | 'metadata' | 'none';
  };
  idp: { issuer: string; kid: string; alg: string };
  startedAt: string;
  durationMs: number;
  cases: CaseResult[];
  passed: number;
  failed: number;
  /** failed cases that are required: any makes `ok` false */
  requiredFailed: number;
  warnings: number;
  ok: boolean;
  /** remarks on the run as a whole */
  notes: string[];
}

/** What a case sends: a header and claims to sign, how to sign them, and the other form parameters. */
interface Draft {
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
  params: Record<string, string>;
  signer: 'idp' | 'unknown-key' | 'unknown-key-idp-kid' | 'none';
  /** the request's DPoP proof: none, by the key the ID-JAG is bound to, or by another key */
  proof: 'none' | 'bound-key' | 'other-key';
}

interface CaseContext {
  now: number;
  issuer: string;
  scopes: ScopePlan;
  /** the thumbprint of the client's DPoP key, which the DPoP cases bind their ID-JAGs to */
  jkt: string;
}

interface CaseSpec {
  id: string;
  title: string;
  expected: Expectation;
  required: boolean;
  section: string;
  /** the one thing this case changes in the valid request */
  tweak(draft: Draft, ctx: CaseContext): Draft;
  /** error codes a conformant rejection may carry without a warning; default invalid_grant (RFC 7523 §3.1) */
  errors?: string[];
  /** the same ID-JAG is presented twice: the first must be accepted, the verdict is on the second */
  replay?: boolean;
  /** the same DPoP proof comes with two fresh ID-JAGs: the first must be accepted, the verdict is on the second */
  proofReplay?: boolean;
  /** a 200 that grants only the ID-JAG's scopes is conformant too (RFC 6749 §3.3 lets an AS narrow scope) */
  narrowingPasses?: boolean;
}

const withHeader = (d: Draft, header: Record<string, unknown>): Draft => ({ ...d, header: { ...d.header, ...header } });
const withClaims = (d: Draft, claims: Record<string, unknown>): Draft => ({ ...d, claims: { ...d.claims, ...claims } });

/** The cases, in the order they run. Every one but the replay mints an ID-JAG with a fresh `jti`. */
export const AS_CASES: readonly CaseSpec[] = [
  {
    id: 'valid', title: 'a valid ID-JAG is exchanged for an access token', expected: 'accepted', required: true,
    section: 'draft §4.4; RFC 7523 §2.1', tweak: (d) => d,
  },
  {
    id: 'typ-wrong', title: 'header typ "JWT" instead of oauth-id-jag+jwt', expected: 'rejected', required: true,
    section: 'draft §3 (typ); RFC 8725 §3.11', tweak: (d) => withHeader(d, { typ: 'JWT' }),
  },
  {
    id: 'alg-none', title: 'unsigned ID-JAG (alg "none", the IdP\'s kid)', expected: 'rejected', required: true,
    section: 'RFC 7523 §3 item 9; RFC 8725 §3.1', tweak: (d) => ({ ...d, signer: 'none' }),
  },
  {
    id: 'signature-unknown-key', title: 'signed by a key the IdP does not publish (unknown kid)', expected: 'rejected', required: true,
    section: 'RFC 7523 §3 item 9', tweak: (d) => ({ ...d, signer: 'unknown-key' }),
  },
  {
    id: 'signature-forged-kid', title: 'signed by an unknown key that claims the IdP\'s kid', expected: 'rejected', required: true,
    section: 'RFC 7523 §3 item 9', tweak: (d) => ({ ...d, signer: 'unknown-key-idp-kid' }),
  },
  {
    id: 'iss-other', title: 'iss of another IdP (signed with the trusted IdP\'s key)', expected: 'rejected', required: true,
    section: 'RFC 7523 §3 item 1; draft §4.4', tweak: (d) => withClaims(d, { iss: OTHER_IDP }),
  },
  {
    id: 'aud-other-as', title: 'aud of another authorization server', expected: 'rejected', required: true,
    section: 'RFC 7523 §3 item 3; draft §4.4', tweak: (d) => withClaims(d, { aud: OTHER_AS }),
  },
  {
    id: 'aud-array-of-two', title: 'aud an array of this AS and another one', expected: 'rejected', required: true,
    section: 'draft §3 (aud), §4.4; RFC 8725 §3.9', tweak: (d, ctx) => withClaims(d, { aud: [ctx.issuer, OTHER_AS] }),
  },
  {
    id: 'client-id-other', title: 'client_id of another client than the authenticated one', expected: 'rejected', required: true,
    section: 'draft §3 (client_id), §4.4', tweak: (d) => withClaims(d, { client_id: OTHER_CLIENT }),
  },
  {
    id: 'expired', title: `expired ${TIME_OFFSET} s ago`, expected: 'rejected', required: true,
    section: 'RFC 7523 §3 item 4', tweak: (d, { now }) => withClaims(d, { iat: now - TIME_OFFSET - LIFETIME, exp: now - TIME_OFFSET }),
  },
  {
    // RFC 7519/7523 only let an AS reject a future iat; rejecting it is good practice, so it is advice, not a requirement
    id: 'iat-future', title: `iat ${TIME_OFFSET} s in the future`, expected: 'rejected', required: false,
    section: 'draft §4.4 (iat); RFC 7519 §4.1.6', tweak: (d, { now }) => withClaims(d, { iat: now + TIME_OFFSET, exp: now + TIME_OFFSET + LIFETIME }),
  },
  {
    id: 'jti-missing', title: 'no jti claim', expected: 'rejected', required: true,
    section: 'draft §3 (jti REQUIRED); RFC 7523 §3 item 7', tweak: (d) => withClaims(d, { jti: undefined }),
  },
  {
    id: 'jti-replay', title: 'the same valid ID-JAG presented a second time', expected: 'rejected', required: true,
    section: 'draft §4.4; RFC 7523 §3 item 7; MCP enterprise-managed authorization', tweak: (d) => d, replay: true,
  },
  {
    id: 'resource-other', title: 'resource (claim and request) of an MCP server this AS does not serve', expected: 'rejected', required: true,
    section: 'draft §4.4; RFC 8707 §2', tweak: (d) => ({ ...withClaims(d, { resource: OTHER_RESOURCE }), params: { ...d.params, resource: OTHER_RESOURCE } }),
  },
  {
    id: 'scope-beyond', title: 'request scope beyond the ID-JAG\'s scope', expected: 'rejected', required: true,
    section: 'draft §4.4; RFC 6749 §3.3', errors: ['invalid_grant', 'invalid_scope'], narrowingPasses: true,
    tweak: (d, { scopes }) => ({ ...withClaims(d, { scope: joinScope(scopes.granted) }), params: { ...d.params, scope: scopes.beyond.join(' ') } }),
  },
];

const bound = (d: Draft, ctx: CaseContext, proof: Draft['proof']): Draft => ({ ...withClaims(d, { cnf: { jkt: ctx.jkt } }), proof });
/** A bound ID-JAG presented without the right proof is a bad grant, or a bad proof: either answer is conformant. */
const BINDING_ERRORS = ['invalid_grant', 'invalid_dpop_proof'];

/**
 * The DPoP cases (run with the `dpop` option): ID-JAGs bound to the client's key, as idjag issues them after a
 * token exchange that carried a DPoP proof. An AS that does not support DPoP at all may refuse every bound
 * ID-JAG: the acceptance is advice, the refusals are required (a bound ID-JAG must never be usable without its key).
 */
export const DPOP_CASES: readonly CaseSpec[] = [
  {
    id: 'dpop-bound', title: 'an ID-JAG bound to the client\'s DPoP key (cnf.jkt), with a proof by that key', expected: 'accepted', required: false,
    section: 'draft §9.8.1.2; RFC 9449 §4.3, §5', tweak: (d, ctx) => bound(d, ctx, 'bound-key'),
  },
  {
    id: 'dpop-no-proof', title: 'an ID-JAG bound to a DPoP key, presented without a DPoP proof', expected: 'rejected', required: true,
    section: 'draft §9.8.1.2; RFC 9449 §5', errors: BINDING_ERRORS, tweak: (d, ctx) => bound(d, ctx, 'none'),
  },
  {
    id: 'dpop-other-key', title: 'an ID-JAG bound to a DPoP key, with a valid proof by another key', expected: 'rejected', required: true,
    section: 'draft §9.8.1.2; RFC 9449 §4.3', errors: BINDING_ERRORS, tweak: (d, ctx) => bound(d, ctx, 'other-key'),
  },
  {
    id: 'dpop-proof-replay', title: 'the DPoP proof of an accepted request presented again, with a fresh bound ID-JAG', expected: 'rejected', required: false,
    section: 'RFC 9449 §11.1', errors: ['invalid_dpop_proof', 'invalid_grant'], proofReplay: true, tweak: (d, ctx) => bound(d, ctx, 'bound-key'),
  },
];

interface ScopePlan {
  /** every scope of the valid ID-JAG */
  all: string[];
  /** what the scope case's ID-JAG grants */
  granted: string[];
  /** what the scope case requests instead */
  beyond: string[];
}

/**
 * The scope case withholds real scopes when it can: the ID-JAG grants the first, the request asks for the rest.
 * With fewer than two scopes it can only ask for one the AS has never heard of, which an AS may drop for that
 * reason alone, so the case proves less (the report says so).
 */
function planScopes(scopes: string[]): ScopePlan {
  if (scopes.length >= 2) return { all: scopes, granted: scopes.slice(0, 1), beyond: scopes.slice(1) };
  return { all: scopes, granted: scopes, beyond: [UNGRANTED_SCOPE] };
}

const splitScope = (scope: string | undefined): string[] => [...new Set((scope ?? '').split(' ').filter(Boolean))];
const joinScope = (scopes: string[]): string | undefined => (scopes.length ? scopes.join(' ') : undefined);

/** The valid request every case starts from: what idjag itself would issue for this target. */
function validDraft(options: AsConformanceOptions, ctx: CaseContext): Draft {
  const { signingKey } = options.idp;
  return {
    header: { alg: signingKey.alg, typ: ID_JAG_TYP, kid: signingKey.kid },
    claims: {
      iss: options.idp.issuer,
      sub: options.subject ?? 'idjag-conformance-kit',
      aud: options.issuer,
      client_id: options.clientId,
      jti: randomUUID(),
      iat: ctx.now,
      exp: ctx.now + LIFETIME,
      resource: options.resource,
      scope: joinScope(ctx.scopes.all),
      email: options.email,
    },
    params: options.resource ? { resource: options.resource } : {},
    signer: 'idp',
    proof: 'none',
  };
}

type Key = Parameters<SignJWT['sign']>[0];

interface Keys {
  idp: Key;
  /** a fresh key of the IdP's algorithm that no JWKS publishes */
  unknown: Key;
  /** with `dpop`: the client's DPoP key, which bound ID-JAGs name, and another one */
  dpop?: { bound: DpopSession; other: DpopSession };
}

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Signs a draft; claims set to undefined are left out, so a case can remove one. */
async function sign(draft: Draft, keys: Keys): Promise<{ header: Record<string, unknown>; claims: Record<string, unknown>; jwt: string }> {
  const claims = Object.fromEntries(Object.entries(draft.claims).filter(([, v]) => v !== undefined));
  if (draft.signer === 'none') {
    const header = { ...draft.header, alg: 'none' };
    return { header, claims, jwt: `${b64(header)}.${b64(claims)}.` };
  }
  const header = draft.signer === 'unknown-key' ? { ...draft.header, kid: `conformance-unknown-${randomUUID()}` } : draft.header;
  const key = draft.signer === 'idp' ? keys.idp : keys.unknown;
  const jwt = await new SignJWT(claims).setProtectedHeader(header as JWTHeaderParameters).sign(key);
  return { header, claims, jwt };
}

/** Tokens in reports are shortened: a report is shown and stored, and a valid ID-JAG or access token is a credential. */
export function shortenToken(token: string): string {
  return token.length <= 24 ? token : `${token.slice(0, 16)}…(${token.length} chars)`;
}

const TOKEN_FIELDS = new Set(['access_token', 'refresh_token', 'id_token', 'assertion']);
const JWT_IN_TEXT = /[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g;
const JWT_ONLY = /^[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*$/;
const MAX_TEXT = 500;

export function shortenTokens(value: unknown, field?: string): unknown {
  if (typeof value === 'string') return (field && TOKEN_FIELDS.has(field)) || JWT_ONLY.test(value) ? shortenToken(value) : value;
  if (Array.isArray(value)) return value.map((v) => shortenTokens(v));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shortenTokens(v, k)]));
  return value;
}

function shortenText(text: string): string {
  const shortened = text.replace(JWT_IN_TEXT, shortenToken);
  return shortened.length <= MAX_TEXT ? shortened : `${shortened.slice(0, MAX_TEXT)}…`;
}

/** The raw answer: status and parsed body, kept whole for judging; only the report shortens it. */
interface Answer {
  status: number | null;
  body: unknown;
  /** the connection failure, when there was no answer */
  failure?: string;
}

function basicAuth(id: string, secret: string): string {
  // RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64')}`;
}

async function present(options: AsConformanceOptions, assertion: string, params: Record<string, string>, proof?: string): Promise<Answer> {
  const doFetch = options.fetch ?? fetch;
  try {
    const res = await doFetch(options.tokenEndpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
        authorization: basicAuth(options.clientId, options.clientSecret),
        ...(proof === undefined ? {} : { dpop: proof }),
      },
      body: new URLSearchParams({ grant_type: JWT_BEARER, assertion, ...params }).toString(),
      // a token endpoint answers; it never sends the client elsewhere
      redirect: 'manual',
      signal: AbortSignal.timeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS),
    });
    const text = await res.text();
    return { status: res.status, body: parseBody(text) };
  } catch (err) {
    return { status: null, body: null, failure: describeFailure(err) };
  }
}

function parseBody(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function describeFailure(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return 'no answer within the timeout';
  const cause = e.cause?.code ?? e.cause?.message;
  return `${e.message ?? String(err)}${cause ? ` (${cause})` : ''}`;
}

const field = (body: unknown, name: string): unknown => (body && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>)[name] : undefined);

const issuedToken = (a: Answer): boolean => a.status !== null && a.status >= 200 && a.status < 300 && typeof field(a.body, 'access_token') === 'string';
const isRejection = (a: Answer): boolean => a.status !== null && a.status >= 400 && a.status < 500;

function describeAnswer(a: Answer): string {
  if (a.status === null) return `no answer: ${a.failure ?? 'unknown failure'}`;
  const error = field(a.body, 'error');
  if (issuedToken(a)) return `accepted (${a.status})`;
  if (a.status >= 200 && a.status < 300) return `${a.status} without an access_token`;
  if (isRejection(a)) return `rejected (${a.status}${typeof error === 'string' ? ` ${error}` : ', no error code'})`;
  return `${a.status}${typeof error === 'string' ? ` ${error}` : ''}`;
}

interface Verdict {
  pass: boolean;
  warnings: string[];
  note: string | null;
}

/** An expected acceptance: a 2xx with an access token, nothing else. */
function judgeAcceptance(a: Answer): Verdict {
  // the AS's own error_description is in the body: no note needed to say why
  return { pass: issuedToken(a), warnings: [], note: null };
}

/**
 * An expected rejection: any 4xx that issues nothing passes, because what matters is that no token came out.
 * It passes with a warning when it is not the 400 `invalid_grant` that RFC 7523 §3.1 and the draft name (or the
 * case's other accepted code), since a client then cannot tell a bad grant from a bad request. A 5xx, a redirect
 * or no answer fails: the AS did not reject the grant, it broke on it.
 */
function judgeRejection(spec: CaseSpec, a: Answer, granted: string[]): Verdict {
  if (issuedToken(a)) return spec.narrowingPasses ? judgeNarrowing(a, granted) : { pass: false, warnings: [], note: 'the AS issued an access token for a grant it must refuse' };
  if (!isRejection(a)) {
    const note = a.status === null ? null : 'a rejection is an OAuth error response (4xx), not a server failure, redirect or empty success';
    return { pass: false, warnings: [], note };
  }
  const allowed = spec.errors ?? ['invalid_grant'];
  const error = field(a.body, 'error');
  const warnings: string[] = [];
  if (typeof error !== 'string') warnings.push('the answer is not an RFC 6749 §5.2 error response (no "error" member)');
  else if (!allowed.includes(error)) warnings.push(`error "${error}"; the draft and RFC 7523 §3.1 name ${allowed.map((e) => `"${e}"`).join(' or ')} for this`);
  if (a.status !== 400) warnings.push(`status ${a.status}; RFC 6749 §5.2 answers ${allowed.join('/')} with 400`);
  return { pass: true, warnings, note: null };
}

/** The scope case's 200: conformant only when the token's scope stays within the ID-JAG's and is stated. */
function judgeNarrowing(a: Answer, granted: string[]): Verdict {
  const scope = field(a.body, 'scope');
  if (typeof scope !== 'string') {
    // RFC 6749 §5.1: no scope in the answer means the requested scope was issued
    return { pass: false, warnings: [], note: 'the AS issued a token without a scope member, i.e. the requested scope beyond the ID-JAG' };
  }
  const beyond = splitScope(scope).filter((s) => !granted.includes(s));
  if (beyond.length) return { pass: false, warnings: [], note: `the AS issued scope ${beyond.join(' ')}, which the ID-JAG does not grant` };
  return { pass: true, warnings: [], note: `accepted, but issued only "${scope}" (within the ID-JAG's scope), as RFC 6749 §3.3 allows` };
}

function judge(spec: CaseSpec, a: Answer, scopes: ScopePlan): Verdict {
  return spec.expected === 'accepted' ? judgeAcceptance(a) : judgeRejection(spec, a, scopes.granted);
}

const reported = (a: Answer): Exchange => ({ status: a.status, body: typeof a.body === 'string' ? shortenText(a.body) : shortenTokens(a.body) });

/** The request's DPoP proof, by the key the case says, made for the AS's token endpoint (RFC 9449 §4.2). */
async function proofFor(draft: Draft, keys: Keys, tokenEndpoint: string): Promise<{ proof: string | undefined; summary: string | undefined }> {
  if (!keys.dpop) return { proof: undefined, summary: undefined };
  if (draft.proof === 'none') return { proof: undefined, summary: 'none' };
  const session = draft.proof === 'bound-key' ? keys.dpop.bound : keys.dpop.other;
  return {
    proof: await session.buildProof({ htm: 'POST', htu: tokenEndpoint }),
    summary: `signed by ${draft.proof === 'bound-key' ? 'the key the ID-JAG is bound to' : 'another key'} (jkt ${session.thumbprint})`,
  };
}

/** Signs a case's ID-JAG and makes its proof: a fresh ID-JAG (and `jti`) and a fresh proof each time. */
async function prepare(spec: CaseSpec, options: AsConformanceOptions, keys: Keys, ctx: CaseContext) {
  const draft = spec.tweak(validDraft(options, ctx), ctx);
  const signed = await sign(draft, keys);
  const { proof, summary } = await proofFor(draft, keys, options.tokenEndpoint);
  const request: RequestSummary = {
    header: signed.header, claims: signed.claims, assertion: shortenToken(signed.jwt), params: draft.params,
    clientAuth: `client_secret_basic as ${options.clientId}`,
    ...(summary === undefined ? {} : { dpop: summary }),
  };
  return { draft, signed, proof, request };
}

async function runCase(spec: CaseSpec, options: AsConformanceOptions, keys: Keys, scopes: ScopePlan): Promise<CaseResult> {
  const ctx: CaseContext = { now: Math.floor(Date.now() / 1000), issuer: options.issuer, scopes, jkt: keys.dpop?.bound.thumbprint ?? '' };
  if (spec.proofReplay) return runProofReplay(spec, options, keys, ctx);
  const { draft, signed, proof, request } = await prepare(spec, options, keys, ctx);
  let first: Answer | undefined;
  if (spec.replay) {
    first = await present(options, signed.jwt, draft.params, proof);
    if (!issuedToken(first)) {
      // without a first success there is nothing to replay: the case proves nothing, so it cannot pass
      const verdict = { pass: false, warnings: [], note: `the first presentation was not accepted (${describeAnswer(first)}), so replay protection could not be observed` };
      const unobserved = result(spec, request, first, verdict, undefined);
      return { ...unobserved, actual: `first presentation ${unobserved.actual}` };
    }
  }
  const answer = await present(options, signed.jwt, draft.params, proof);
  return result(spec, request, answer, judge(spec, answer, scopes), first);
}

/** The proof of an accepted request again, with another fresh ID-JAG: only remembering proofs can refuse it. */
async function runProofReplay(spec: CaseSpec, options: AsConformanceOptions, keys: Keys, ctx: CaseContext): Promise<CaseResult> {
  const earlier = await prepare(spec, options, keys, ctx);
  const first = await present(options, earlier.signed.jwt, earlier.draft.params, earlier.proof);
  const again = await prepare(spec, options, keys, ctx);
  const request = { ...again.request, dpop: `the proof of the first presentation again (${earlier.request.dpop ?? 'none'})` };
  if (!issuedToken(first)) {
    const verdict = { pass: false, warnings: [], note: `the first presentation was not accepted (${describeAnswer(first)}), so replay protection could not be observed` };
    const unobserved = result(spec, request, first, verdict, undefined);
    return { ...unobserved, actual: `first presentation ${unobserved.actual}` };
  }
  const answer = await present(options, again.signed.jwt, again.draft.params, earlier.proof);
  return result(spec, request, answer, judge(spec, answer, ctx.scopes), first);
}

function result(spec: CaseSpec, request: RequestSummary, answer: Answer, verdict: Verdict, first: Answer | undefined): CaseResult {
  const error = field(answer.body, 'error');
  return {
    id: spec.id, title: spec.title, expected: spec.expected, required: spec.required, section: spec.section, request,
    ...reported(answer),
    error: typeof error === 'string' ? error : null,
    actual: describeAnswer(answer),
    ...verdict,
    ...(first ? { first: reported(first) } : {}),
  };
}

/** RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path. */
export function metadataUrl(issuer: string): string {
  const url = new URL(issuer);
  const path = url.pathname === '/' ? '' : url.pathname.replace(/\/+$/, '');
  return `${url.origin}/.well-known/oauth-authorization-server${path}`;
}

/** Best effort: an AS without readable metadata simply gets ID-JAGs without a scope claim. */
async function discoverScopes(options: AsConformanceOptions): Promise<string[] | undefined> {
  try {
    const res = await (options.fetch ?? fetch)(metadataUrl(options.issuer), {
      headers: { accept: 'application/json' },
      redirect: 'manual',
      signal: AbortSignal.timeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS),
    });
    if (res.status !== 200) return undefined;
    const scopes = field(await res.json(), 'scopes_supported');
    return Array.isArray(scopes) && scopes.every((s) => typeof s === 'string') && scopes.length ? scopes as string[] : undefined;
  } catch {
    return undefined;
  }
}

async function resolveScopes(options: AsConformanceOptions): Promise<{ scopes: string[]; source: AsConformanceReport['target']['scopeSource'] }> {
  if (options.scope !== undefined) return { scopes: splitScope(options.scope), source: 'option' };
  const discovered = await discoverScopes(options);
  return discovered ? { scopes: discovered, source: 'metadata' } : { scopes: [], source: 'none' };
}

async function loadKeys(idp: ConformanceIdp, dpop: boolean): Promise<Keys> {
  const { alg, privateJwk } = idp.signingKey;
  const crv = privateJwk.crv;
  return {
    idp: await importJWK(privateJwk, alg),
    unknown: (await generateKeyPair(alg, crv ? { crv } : {})).privateKey,
    ...(dpop ? { dpop: { bound: await DpopSession.create(), other: await DpopSession.create() } } : {}),
  };
}

function runNotes(cases: CaseResult[], scopes: ScopePlan, source: AsConformanceReport['target']['scopeSource'], resource: string | undefined): string[] {
  const notes: string[] = [];
  if (cases.find((c) => c.id === 'valid')?.pass === false) {
    notes.push('the valid ID-JAG was rejected: until it is accepted, the rejections show nothing about which check caught each fault (check the AS trusts this IdP\'s issuer and JWKS, and the client id, secret, resource and scope)');
  }
  if (scopes.all.length < 2) {
    notes.push(`fewer than two scopes${source === 'none' ? ' (none given, none in the AS metadata)' : ''}: scope-beyond asks for ${UNGRANTED_SCOPE}, which an AS may drop only because it does not know it; give --scope with two or more scopes for a sharper test`);
  }
  if (!resource) notes.push('no resource given: the ID-JAGs name no MCP server, so an AS that needs one rejects the valid case');
  if (cases.find((c) => c.id === 'dpop-bound')?.pass === false) {
    notes.push('the ID-JAG bound to the client\'s DPoP key was rejected even with a proof by that key: the AS may not support DPoP; refusing every bound ID-JAG is safe, and the other DPoP cases then show only that');
  }
  return notes;
}

/**
 * Runs every case against one Resource AS, one after the other (the replay case depends on order, and an AS
 * under test should not see a burst), and never throws for what the AS does: every answer, even none, is a
 * verdict in the report. It throws only when the IdP key cannot be used.
 */
export async function runAsConformance(options: AsConformanceOptions): Promise<AsConformanceReport> {
  const started = Date.now();
  const keys = await loadKeys(options.idp, options.dpop === true);
  const { scopes: list, source } = await resolveScopes(options);
  const scopes = planScopes(list);
  const cases: CaseResult[] = [];
  for (const spec of options.dpop ? [...AS_CASES, ...DPOP_CASES] : AS_CASES) cases.push(await runCase(spec, options, keys, scopes));
  const failed = cases.filter((c) => !c.pass);
  const requiredFailed = failed.filter((c) => c.required).length;
  return {
    target: {
      tokenEndpoint: options.tokenEndpoint, issuer: options.issuer, clientId: options.clientId,
      resource: options.resource, scope: joinScope(list), scopeSource: source,
    },
    idp: { issuer: options.idp.issuer, kid: options.idp.signingKey.kid, alg: options.idp.signingKey.alg },
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    cases,
    passed: cases.length - failed.length,
    failed: failed.length,
    requiredFailed,
    warnings: cases.reduce((n, c) => n + c.warnings.length, 0),
    ok: requiredFailed === 0,
    notes: runNotes(cases, scopes, source, options.resource),
  };
}

/** The terminal report: a header, one line per case (PASS/FAIL, expected vs actual, section), details under it. */
export function formatAsReport(report: AsConformanceReport): string {
  const { target, idp } = report;
  const lines = [
    `Resource AS conformance: ${target.issuer}`,
    `  token endpoint  ${target.tokenEndpoint} (client_secret_basic as ${target.clientId})`,
    `  resource        ${target.resource ?? '(none)'}`,
    `  scope           ${target.scope ?? '(none)'}${target.scopeSource === 'metadata' ? ' (from the AS metadata)' : ''}`,
    `  ID-JAGs from    ${idp.issuer} (kid ${idp.kid}, ${idp.alg})`,
    '',
  ];
  const idWidth = Math.max(...report.cases.map((c) => c.id.length + (c.required ? 0 : ' (advisory)'.length)));
  const verdictWidth = Math.max(...report.cases.map((c) => verdictText(c).length));
  for (const c of report.cases) {
    const id = `${c.id}${c.required ? '' : ' (advisory)'}`;
    lines.push(`${c.pass ? 'PASS' : 'FAIL'}  ${id.padEnd(idWidth)}  ${verdictText(c).padEnd(verdictWidth)}  ${c.section}`);
    for (const detail of caseDetails(c)) lines.push(`      ${detail}`);
  }
  lines.push('');
  for (const note of report.notes) lines.push(`note: ${note}`);
  const required = report.requiredFailed ? ` (${report.requiredFailed} required)` : '';
  const warnings = report.warnings ? `, ${report.warnings} warning${report.warnings === 1 ? '' : 's'}` : '';
  lines.push(`${report.cases.length} cases: ${report.passed} passed, ${report.failed} failed${required}${warnings}. ${report.ok ? 'CONFORMANT' : 'NOT CONFORMANT'}`);
  return lines.join('\n');
}

const verdictText = (c: CaseResult) => `expected ${c.expected}, got ${c.actual}`;

/** Under a failure, what the AS said; under any case, its warnings and the note that explains the verdict. */
function caseDetails(c: CaseResult): string[] {
  const details: string[] = [];
  details.push(`${c.title}`);
  if (!c.pass) {
    const description = field(c.body, 'error_description');
    if (typeof description === 'string') details.push(`error_description: ${description}`);
    else if (typeof c.body === 'string' && c.body) details.push(`body: ${c.body.slice(0, 200)}`);
  }
  if (c.note) details.push(c.note);
  for (const w of c.warnings) details.push(`warning: ${w}`);
  return c.pass && !c.note && !c.warnings.length ? [] : details;
}
