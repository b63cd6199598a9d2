/** The request's own checks (who asks, and whether the parameters say what the draft requires), as a table. */
import { createHash } from 'node:crypto';
import { CheckList, DETAILS_FORMAT_CHECK, ExchangeRejection, REQUEST_CHECKS, type CheckDef } from '../../src/exchange/checks.ts';
import { MAX_DEPTH, MAX_DETAILS } from '../../src/exchange/details.ts';
import { ID_JAG, ID_TOKEN, parseRequest, REFRESH_TOKEN, requestFacts, splitScope, TOKEN_EXCHANGE, type ExchangeInput } from '../../src/exchange/request.ts';
import { CLIENT_ID, expectStoppedAt, input, MCP, MCP_ADMIN, params, RS_ISSUER, thrownBy } from './fixtures.ts';

const SAML2 = 'urn:ietf:params:oauth:token-type:saml2';

interface Refusal {
  name: string;
  input: ExchangeInput;
  check: string;
  error: string;
  reason?: string;
  /** the client-facing description says this */
  says: RegExp;
  /** the checks planned (default: the request's own) */
  defs?: CheckDef[];
}

const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const WITH_DETAILS = [...REQUEST_CHECKS, DETAILS_FORMAT_CHECK];
const details = (value: string): Refusal['input'] => input({ authorization_details: value });

const refusals: Refusal[] = [
  { name: 'a disabled client', input: input({}, { enabled: false }), check: 'client_authentication', error: 'invalid_client', reason: 'client_disabled', says: /client agent is disabled, so it cannot authenticate/ },
  { name: 'a public client', input: input({}, { authMethod: 'none' }), check: 'confidential_client', error: 'unauthorized_client', says: /agent is a public client; only confidential clients/ },
  { name: 'a client without the grant', input: input({}, { grantTypes: ['authorization_code'] }), check: 'grant_type_allowed', error: 'unauthorized_client', says: new RegExp(`not registered for the grant type ${TOKEN_EXCHANGE}`) },
  { name: 'no requested_token_type', input: input({ requested_token_type: undefined }), check: 'requested_token_type', error: 'invalid_request', says: new RegExp(`requested_token_type is required; the accepted value is ${ID_JAG}`) },
  { name: 'an empty requested_token_type', input: input({ requested_token_type: '' }), check: 'requested_token_type', error: 'invalid_request', says: /requested_token_type is required/ },
  { name: 'an access token requested', input: input({ requested_token_type: 'urn:ietf:params:oauth:token-type:access_token' }), check: 'requested_token_type', error: 'invalid_request', says: /requested_token_type urn:ietf:params:oauth:token-type:access_token is not supported/ },
  { name: 'no subject_token_type', input: input({ subject_token_type: undefined }), check: 'subject_token_type', error: 'invalid_request', says: new RegExp(`subject_token_type is required; the accepted values are ${ID_TOKEN} and ${REFRESH_TOKEN}`) },
  { name: 'a SAML 2 subject token', input: input({ subject_token_type: SAML2 }), check: 'subject_token_type', error: 'invalid_request', says: new RegExp(`subject_token_type ${SAML2} is not supported by this IdP`) },
  { name: 'another subject_token_type', input: input({ subject_token_type: 'urn:x:jwt' }), check: 'subject_token_type', error: 'invalid_request', says: /subject_token_type urn:x:jwt is not supported; the accepted values/ },
  { name: 'no subject_token', input: input({ subject_token: undefined }), check: 'subject_token_present', error: 'invalid_request', says: /^subject_token is required$/ },
  { name: 'an empty subject_token', input: input({ subject_token: '' }), check: 'subject_token_present', error: 'invalid_request', says: /^subject_token is required$/ },
  { name: 'no audience', input: input({ audience: undefined }), check: 'audience_present', error: 'invalid_request', says: /audience is required: the issuer identifier of the Resource AS/ },
  { name: 'an actor_token without actor_token_type', input: input({ actor_token: 'a' }), check: 'actor_token', error: 'invalid_request', says: /^actor_token_type is required when actor_token is sent/ },
  { name: 'an actor_token_type without actor_token', input: input({ actor_token_type: JWT_TYPE }), check: 'actor_token', error: 'invalid_request', says: /^actor_token_type was sent without actor_token; send both or neither$/ },
  { name: 'an actor_token_type that is no URI', input: input({ actor_token: 'a', actor_token_type: 'jwt' }), check: 'actor_token', error: 'invalid_request', says: /^actor_token_type jwt is not a token type identifier/ },
  { name: 'authorization_details that is not JSON', input: details('[{type: todo}]'), check: 'authorization_details.format', error: 'invalid_authorization_details', says: /^authorization_details is not valid JSON/, defs: WITH_DETAILS },
  { name: 'authorization_details that is an object, not an array', input: details('{"type":"todo_list"}'), check: 'authorization_details.format', error: 'invalid_authorization_details', says: /^authorization_details must be a JSON array of objects/, defs: WITH_DETAILS },
  { name: 'an empty authorization_details array', input: details('[]'), check: 'authorization_details.format', error: 'invalid_authorization_details', says: /empty array asks for nothing/, defs: WITH_DETAILS },
  { name: 'an authorization_details element that is no object', input: details('[{"type":"a"},"b"]'), check: 'authorization_details.format', error: 'invalid_authorization_details', says: /^authorization_details\[1\] is not an object/, defs: WITH_DETAILS },
  { name: 'an authorization_details object without type', input: details('[{"actions":["read"]}]'), check: 'authorization_details.format', error: 'invalid_authorization_details', says: /^authorization_details\[0\]\.type: type is required/, defs: WITH_DETAILS },
  { name: 'an authorization_details type that is no string', input: details('[{"type":7}]'), check: 'authorization_details.format', error: 'invalid_authorization_details', says: /^authorization_details\[0\]\.type: type must be a string$/, defs: WITH_DETAILS },
  { name: 'a common field of the wrong shape (RFC 9396 §2.2)', input: details('[{"type":"a","actions":"read"}]'), check: 'authorization_details.format', error: 'invalid_authorization_details', says: /^authorization_details\[0\]\.actions: /, defs: WITH_DETAILS },
  { name: 'too many authorization_details objects', input: details(JSON.stringify(Array.from({ length: MAX_DETAILS + 1 }, () => ({ type: 'a' })))), check: 'authorization_details.format', error: 'invalid_authorization_details', says: new RegExp(`at most ${MAX_DETAILS} objects`), defs: WITH_DETAILS },
  { name: 'authorization_details nested too deeply', input: details(`[{"type":"a","x":${'['.repeat(MAX_DEPTH)}${']'.repeat(MAX_DEPTH)}}]`), check: 'authorization_details.format', error: 'invalid_authorization_details', says: /nests deeper than/, defs: WITH_DETAILS },
  { name: 'authorization_details sent twice', input: input({ authorization_details: ['[{"type":"a"}]', '[{"type":"b"}]'] }), check: 'authorization_details.format', error: 'invalid_authorization_details', says: /must be sent once/, defs: WITH_DETAILS },
];

describe('parseRequest refuses', () => {
  test.each(refusals)('$name: check $check', ({ input: given, check, error, reason, says, defs }) => {
    const checks = new CheckList(REQUEST_CHECKS);
    const rejection = thrownBy(() => parseRequest(given, checks));
    expect(rejection).toBeInstanceOf(ExchangeRejection);
    expect(rejection).toMatchObject({ check, error, reason: reason ?? check });
    expect((rejection as ExchangeRejection).description).toMatch(says);
    expect(checks.results.find((c) => c.name === check)?.message).toBe((rejection as ExchangeRejection).description);
    expectStoppedAt(checks, defs ?? REQUEST_CHECKS, check);
  });
});

describe('parseRequest accepts', () => {
  test('a valid request: every request check passes, and the request says what was asked', () => {
    const checks = new CheckList(REQUEST_CHECKS);
    const req = parseRequest(input(), checks);
    expect(req).toEqual({ clientId: CLIENT_ID, subjectToken: 'the-subject-token', subjectTokenType: ID_TOKEN, audience: RS_ISSUER, resources: [MCP], scopes: ['todos.read'] });
    expect(checks.results.every((c) => c.status === 'passed')).toBe(true);
    expect(checks.results[0]?.message).toBe('authenticated with client_secret_basic');
  });

  test('an actor_token with its type: accepted (RFC 8693 §2.1), the check says how it is kept, the request does not carry it', () => {
    const checks = new CheckList(REQUEST_CHECKS);
    const req = parseRequest(input({ actor_token: 'the-actor-token', actor_token_type: JWT_TYPE }), checks);
    expect(checks.results.find((c) => c.name === 'actor_token')).toMatchObject({ status: 'passed', message: `type ${JWT_TYPE}; recorded by its hash, not processed further` });
    expect(JSON.stringify(req)).not.toContain('the-actor-token');
  });

  test('authorization_details: parsed, their check planned and passed; the objects kept whole, unknown fields included', () => {
    const checks = new CheckList(REQUEST_CHECKS);
    const sent = [{ type: 'todo_list', actions: ['read'], locations: [MCP], list: { id: 'l1' } }, { type: 'https://example.com/other' }];
    const req = parseRequest(input({ authorization_details: JSON.stringify(sent) }), checks);
    expect(req.authorizationDetails).toEqual(sent);
    expect(checks.results.map((c) => c.name)).toEqual([...REQUEST_CHECKS, DETAILS_FORMAT_CHECK].map((d) => d.name));
    expect(checks.results.at(-1)).toMatchObject({ status: 'passed', message: 'types todo_list, https://example.com/other' });
  });

  test('without authorization_details, no such check and no such field', () => {
    const checks = new CheckList(REQUEST_CHECKS);
    expect(parseRequest(input(), checks)).not.toHaveProperty('authorizationDetails');
    expect(checks.results.map((c) => c.name)).toEqual(REQUEST_CHECKS.map((d) => d.name));
  });

  test('a refresh token as subject token', () => {
    expect(parseRequest(input({ subject_token_type: REFRESH_TOKEN }), new CheckList(REQUEST_CHECKS)).subjectTokenType).toBe(REFRESH_TOKEN);
  });

  test('resources and scopes deduplicated, in order; none of either when none was sent', () => {
    const checks = new CheckList(REQUEST_CHECKS);
    const req = parseRequest(input({ resource: [MCP, MCP_ADMIN, MCP, ''], scope: 'todos.read  todos.write todos.read' }), checks);
    expect(req.resources).toEqual([MCP, MCP_ADMIN]);
    expect(req.scopes).toEqual(['todos.read', 'todos.write']);
    const bare = parseRequest(input({ resource: undefined, scope: undefined }), new CheckList(REQUEST_CHECKS));
    expect(bare.resources).toEqual([]);
    expect(bare.scopes).toBeUndefined();
  });
});

describe('splitScope', () => {
  test.each([
    ['todos.read', ['todos.read']],
    [' a  b a ', ['a', 'b']],
    ['', undefined],
    [undefined, undefined],
    [['a'], undefined],
    ['   ', []],
  ])('%j → %j', (given, expected) => {
    expect(splitScope(given)).toEqual(expected);
  });
});

describe('requestFacts', () => {
  test('what the request says, with the client id it names', () => {
    expect(requestFacts(params({ resource: [MCP, MCP_ADMIN], scope: 'a b' }), CLIENT_ID)).toEqual({
      clientId: CLIENT_ID, subjectTokenType: ID_TOKEN, audience: RS_ISSUER, resources: [MCP, MCP_ADMIN], scopes: ['a', 'b'],
    });
  });

  test('of an empty or malformed request, nothing', () => {
    expect(requestFacts({}, undefined)).toEqual({});
    expect(requestFacts({ audience: '', resource: [], scope: '' }, '')).toEqual({});
  });

  test('never the tokens: the actor token by its type and SHA-256 only', () => {
    const secret = 'eyJ-secret-subject-token';
    const facts = requestFacts(params({ subject_token: secret, actor_token: 'actor-secret', actor_token_type: ID_TOKEN }), CLIENT_ID);
    const stored = JSON.stringify(facts);
    expect(stored).not.toContain('secret-subject-token');
    expect(stored).not.toContain('actor-secret');
    expect(Object.keys(facts).sort()).toEqual(['actorTokenHash', 'actorTokenType', 'audience', 'clientId', 'resources', 'scopes', 'subjectTokenType']);
    expect(facts).toMatchObject({ actorTokenType: ID_TOKEN, actorTokenHash: createHash('sha256').update('actor-secret').digest('base64url') });
  });
});
