/** The request's own checks (who asks, and whether the parameters say what the draft requires), as a table. */
import { CheckList, ExchangeRejection, REQUEST_CHECKS } from '../../src/exchange/checks.ts';
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
}

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
  { name: 'an actor_token', input: input({ actor_token: 'a', actor_token_type: ID_TOKEN }), check: 'unsupported_parameters', error: 'invalid_request', says: /^actor_token and actor_token_type are not supported for ID-JAG requests; omit them$/ },
  { name: 'authorization_details', input: input({ authorization_details: '[]' }), check: 'unsupported_parameters', error: 'invalid_request', says: /^authorization_details is not supported for ID-JAG requests; omit it$/ },
];

describe('parseRequest refuses', () => {
  test.each(refusals)('$name: check $check', ({ input: given, check, error, reason, says }) => {
    const checks = new CheckList(REQUEST_CHECKS);
    const rejection = thrownBy(() => parseRequest(given, checks));
    expect(rejection).toBeInstanceOf(ExchangeRejection);
    expect(rejection).toMatchObject({ check, error, reason: reason ?? check });
    expect((rejection as ExchangeRejection).description).toMatch(says);
    expect(checks.results.find((c) => c.name === check)?.message).toBe((rejection as ExchangeRejection).description);
    expectStoppedAt(checks, REQUEST_CHECKS, check);
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

  test('never the tokens', () => {
    const secret = 'eyJ-secret-subject-token';
    const facts = requestFacts(params({ subject_token: secret, actor_token: 'actor-secret', actor_token_type: ID_TOKEN }), CLIENT_ID);
    const stored = JSON.stringify(facts);
    expect(stored).not.toContain('secret-subject-token');
    expect(stored).not.toContain('actor-secret');
    expect(Object.keys(facts).sort()).toEqual(['audience', 'clientId', 'resources', 'scopes', 'subjectTokenType']);
  });
});
