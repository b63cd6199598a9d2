import type { CheckList } from './checks.ts';

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
}

/** What the audit log may record of a request, known or not, valid or not. Never the tokens. */
export interface RequestFacts {
  clientId?: string;
  subjectTokenType?: string;
  audience?: string;
  resources?: string[];
  scopes?: string[];
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
  return facts;
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

  const unsupported = (['actor_token', 'actor_token_type', 'authorization_details'] as const).filter((k) => p[k] !== undefined);
  if (unsupported.length) {
    checks.fail('unsupported_parameters', `${unsupported.join(' and ')} ${unsupported.length > 1 ? 'are' : 'is'} not supported for ID-JAG requests; omit ${unsupported.length > 1 ? 'them' : 'it'}`);
  }
  checks.pass('unsupported_parameters');

  return {
    clientId: client.id,
    subjectToken: subjectToken!,
    subjectTokenType: type as SubjectTokenType,
    audience: audience!,
    resources: [...new Set(list(p.resource))],
    scopes: splitScope(p.scope),
  };
}
