import { createHash } from 'node:crypto';
import { DETAILS_FORMAT_CHECK, type CheckList } from './checks.ts';
import { detailTypes, parseAuthorizationDetails, type AuthorizationDetail } from './details.ts';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
export const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
export const REFRESH_TOKEN = 'urn:ietf:params:oauth:token-type:refresh_token';
const SAML2 = 'urn:ietf:params:oauth:token-type:saml2';
export const SUBJECT_TOKEN_TYPES = [ID_TOKEN, REFRESH_TOKEN] as const;
export type SubjectTokenType = (typeof SUBJECT_TOKEN_TYPES)[number];

/** The grant's parameters, as oidc-provider should pass them through (others are dropped before the handler). */
export const PARAMETERS = [
  'requested_token_type', 'subject_token', 'subject_token_type', 'audience', 'resource', 'scope',
  'actor_token', 'actor_token_type', 'authorization_details',
] as const;
/** Only `resource` may repeat (RFC 8707); every other parameter twice is invalid_request. */
export const REPEATABLE = ['resource'] as const;

/** The token request's parameters, as the provider passed them to the grant. */
export type Params = Readonly<Record<string, string | string[] | undefined>>;

/** The client that asks, as the pipeline needs it: authenticated by the provider, or assumed by the simulator. */
export interface RequestingClient {
  id: string;
  /** how it authenticated (`none` for a public client) */
  authMethod: string;
  grantTypes: readonly string[];
  /** a disabled client cannot authenticate: at the token endpoint the provider never finds it */
  enabled: boolean;
  /** registered with `dpop_bound_access_tokens` (RFC 9449 §5.2): every token request carries a DPoP proof */
  dpopBound?: boolean;
}

/** What the exchange pipeline starts from. */
export interface ExchangeInput {
  client: RequestingClient;
  params: Params;
  /** the client sent its secret in the body (client_secret_post): a lint warning */
  credentialsInBody: boolean;
}

export interface ExchangeRequest {
  clientId: string;
  subjectToken: string;
  subjectTokenType: SubjectTokenType;
  audience: string;
  resources: string[];
  /** undefined when no `scope` was sent */
  scopes: string[] | undefined;
  /** the RFC 9396 objects requested; absent when no `authorization_details` was sent */
  authorizationDetails?: AuthorizationDetail[];
}

/** What the audit log may record of a request, known or not, valid or not. Never the tokens. */
export interface RequestFacts {
  clientId?: string;
  subjectTokenType?: string;
  audience?: string;
  resources?: string[];
  scopes?: string[];
  actorTokenType?: string;
  /** the actor token's SHA-256 (base64url): which token it was, without the token */
  actorTokenHash?: string;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
const list = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && x !== '') : str(v) ? [v as string] : []);
export const splitScope = (v: unknown): string[] | undefined => {
  const s = str(v);
  return s === undefined ? undefined : [...new Set(s.split(' ').filter(Boolean))];
};

/** What a request says about itself, valid or not; `clientId` is the authenticated client, or the one it claims. */
export function requestFacts(p: Params, clientId: string | undefined): RequestFacts {
  const facts: RequestFacts = {};
  if (clientId) facts.clientId = clientId;
  const stt = str(p.subject_token_type);
  if (stt) facts.subjectTokenType = stt;
  const audience = str(p.audience);
  if (audience) facts.audience = audience;
  const resources = list(p.resource);
  if (resources.length) facts.resources = resources;
  const scopes = splitScope(p.scope);
  if (scopes) facts.scopes = scopes;
  const actorType = str(p.actor_token_type);
  if (actorType) facts.actorTokenType = actorType;
  const actor = str(p.actor_token);
  if (actor) facts.actorTokenHash = tokenHash(actor);
  return facts;
}

/**
 * The `sub` an ID Token claims, read without verifying anything: good only as a key (a rate limit's) that the
 * verified token must match before anything depends on it.
 */
export function unverifiedSubject(token: string): string | undefined {
  const payload = token.split('.')[1];
  if (!payload || payload.length > 8192) return undefined;
  try {
    const sub = (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { sub?: unknown }).sub;
    return typeof sub === 'string' && sub !== '' ? sub.slice(0, 255) : undefined;
  } catch {
    return undefined;
  }
}

/** The resources a request names, as the exchange reads them: each once, in order. */
export const requestedResources = (p: Params): string[] => [...new Set(list(p.resource))];

/** A token's SHA-256, base64url: enough to recognise it again, useless to present. */
export const tokenHash = (token: string): string => createHash('sha256').update(token).digest('base64url');

/** RFC 8693 §3: a token type identifier is a URI. */
const isTokenTypeUri = (v: string): boolean => URL.canParse(v) && !/\s/.test(v);

/**
 * RFC 8693 §2.1: `actor_token` is OPTIONAL, and `actor_token_type` is REQUIRED with it and must not appear
 * without it. The draft defines no processing for it, so idjag neither validates nor forwards the token: it
 * is recorded by type and hash only (see requestFacts), never stored.
 */
function checkActorToken(p: Params, checks: CheckList): void {
  const token = str(p.actor_token);
  const type = str(p.actor_token_type);
  if (token === undefined && type === undefined) return checks.pass('actor_token');
  if (type === undefined) checks.fail('actor_token', 'actor_token_type is required when actor_token is sent (a token type URI, such as urn:ietf:params:oauth:token-type:jwt)');
  if (token === undefined) checks.fail('actor_token', 'actor_token_type was sent without actor_token; send both or neither');
  if (!isTokenTypeUri(type)) checks.fail('actor_token', `actor_token_type ${type} is not a token type identifier: an absolute URI such as urn:ietf:params:oauth:token-type:jwt`);
  checks.pass('actor_token', `type ${type}; recorded by its hash, not processed further`);
}

/** RFC 9396 §2: when sent, `authorization_details` must parse as a JSON array of typed objects (its own check). */
function requestedDetails(p: Params, checks: CheckList): AuthorizationDetail[] | undefined {
  if (p.authorization_details === undefined) return undefined;
  checks.plan([DETAILS_FORMAT_CHECK]);
  const raw = typeof p.authorization_details === 'string' ? p.authorization_details : undefined;
  if (raw === undefined) checks.fail(DETAILS_FORMAT_CHECK.name, 'authorization_details must be sent once, as a JSON array');
  const parsed = parseAuthorizationDetails(raw);
  if (!parsed.ok) checks.fail(DETAILS_FORMAT_CHECK.name, parsed.description);
  checks.pass(DETAILS_FORMAT_CHECK.name, `types ${detailTypes(parsed.details).join(', ')}`);
  return parsed.details;
}

/**
 * The token exchange request (draft §4.3, RFC 8693 §2.1) itself: who may ask, and whether the parameters say what the draft requires.
 * At the token endpoint the provider has authenticated the client (and parsed the body) before this runs.
 */
export function parseRequest(input: ExchangeInput, checks: CheckList): ExchangeRequest {
  const { client, params: p } = input;
  if (!client.enabled) checks.fail('client_authentication', `client ${client.id} is disabled, so it cannot authenticate`, { error: 'invalid_client', reason: 'client_disabled' });
  checks.pass('client_authentication', `authenticated with ${client.authMethod}`);
  checks.pass('request_syntax');

  checks.require('confidential_client', client.authMethod !== 'none',
    `client ${client.id} is a public client; only confidential clients may use token exchange for an ID-JAG`);
  checks.require('grant_type_allowed', client.grantTypes.includes(TOKEN_EXCHANGE),
    `client ${client.id} is not registered for the grant type ${TOKEN_EXCHANGE}`);

  const requested = str(p.requested_token_type);
  if (requested !== ID_JAG) {
    checks.fail('requested_token_type', requested === undefined
      ? `requested_token_type is required; the accepted value is ${ID_JAG}`
      : `requested_token_type ${requested} is not supported; the accepted value is ${ID_JAG}`);
  }
  checks.pass('requested_token_type');

  const type = str(p.subject_token_type);
  if (!SUBJECT_TOKEN_TYPES.includes(type as SubjectTokenType)) {
    const accepted = `the accepted values are ${ID_TOKEN} and ${REFRESH_TOKEN}`;
    checks.fail('subject_token_type', type === undefined ? `subject_token_type is required; ${accepted}`
      : type === SAML2 ? `subject_token_type ${SAML2} is not supported by this IdP; ${accepted}`
        : `subject_token_type ${type} is not supported; ${accepted}`);
  }
  checks.pass('subject_token_type');

  const subjectToken = str(p.subject_token);
  if (subjectToken === undefined) checks.fail('subject_token_present', 'subject_token is required');
  checks.pass('subject_token_present');

  const audience = str(p.audience);
  if (audience === undefined) checks.fail('audience_present', 'audience is required: the issuer identifier of the Resource AS the ID-JAG is for');
  checks.pass('audience_present');

  checkActorToken(p, checks);
  const details = requestedDetails(p, checks);

  return {
    clientId: client.id,
    subjectToken: subjectToken!,
    subjectTokenType: type as SubjectTokenType,
    audience: audience!,
    resources: requestedResources(p),
    scopes: splitScope(p.scope),
    ...(details ? { authorizationDetails: details } : {}),
  };
}
