/** The ID-JAG's claims, the two minters, and the warnings about requests that work but are discouraged. */
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { lintClaims, lintRequest, lintTarget } from '../../src/exchange/lint.ts';
import { ID_JAG_TYP, idJagClaims, previewMinter, signingMinter, type ClaimFacts, type IdJagClaims } from '../../src/exchange/mint.ts';
import { NO_RELEASE, RELEASABLE_CLAIMS } from '../../src/exchange/release.ts';
import { ID_TOKEN, type ExchangeRequest } from '../../src/exchange/request.ts';
import type { Subject } from '../../src/exchange/subject.ts';
import type { Target } from '../../src/exchange/target.ts';
import { CLIENT_ID, ISSUER, MCP, MCP_ADMIN, mcpServer, NOW, resourceServer, RS_ALIAS, RS_ISSUER, signingKey, user } from './fixtures.ts';

const subject = (over: Partial<Subject> = {}): Subject => ({ user: user(), groups: ['eng'], ...over });
const allowed = { rsClientId: 'agent-at-todo', scopes: ['todos.read', 'todos.write'] };
/** What the exchange established, for the Todo AS releasing email (as the seed's Resource ASes do). */
const facts = (over: Partial<ClaimFacts> = {}): ClaimFacts => ({
  issuer: ISSUER, subject: subject(), resourceServer: resourceServer(), resources: [MCP], decision: allowed, ...over,
});
const releasing = (release: Partial<ReturnType<typeof resourceServer>['release']>) => resourceServer({ release: { ...NO_RELEASE, ...release } });

describe('idJagClaims', () => {
  test('who, for which audience and client, with the granted scopes', () => {
    expect(idJagClaims(facts())).toEqual({
      iss: ISSUER, sub: 'sub-alice', aud: RS_ISSUER, client_id: 'agent-at-todo', resource: MCP, scope: 'todos.read todos.write', email: 'alice@example.com',
    });
  });

  test('resource: one is a string, several an array, none absent', () => {
    expect(idJagClaims(facts({ resources: [MCP, MCP_ADMIN] })).resource).toEqual([MCP, MCP_ADMIN]);
    expect(idJagClaims(facts({ resources: [] }))).not.toHaveProperty('resource');
  });

  test('auth_time, amr and acr copied when the subject token had them', () => {
    const claims = idJagClaims(facts({ subject: subject({ authTime: NOW - 5, amr: ['pwd', 'otp'], acr: 'urn:acr:2' }) }));
    expect(claims).toMatchObject({ auth_time: NOW - 5, amr: ['pwd', 'otp'], acr: 'urn:acr:2' });
    const bare = idJagClaims(facts({ subject: subject({ amr: [] }) }));
    for (const claim of ['auth_time', 'amr', 'acr']) expect(bare).not.toHaveProperty(claim);
  });

  test('email only when the user has one', () => {
    expect(idJagClaims(facts({ subject: subject({ user: user({ email: null }) }) }))).not.toHaveProperty('email');
  });
});

describe('claim release per Resource AS', () => {
  test('a Resource AS that releases nothing learns only sub (and what the exchange granted)', () => {
    expect(idJagClaims(facts({ resourceServer: releasing({}) }))).toEqual({
      iss: ISSUER, sub: 'sub-alice', aud: RS_ISSUER, client_id: 'agent-at-todo', resource: MCP, scope: 'todos.read todos.write',
    });
  });

  test('every releasable claim, from the directory as it is now', () => {
    const claims = idJagClaims(facts({ resourceServer: releasing({ claims: [...RELEASABLE_CLAIMS] }), subject: subject({ groups: ['eng', 'staff'] }) }));
    expect(claims).toMatchObject({ email: 'alice@example.com', email_verified: true, name: 'Alice', preferred_username: 'alice', groups: ['eng', 'staff'] });
  });

  test('only the released ones: name and groups, not email', () => {
    const claims = idJagClaims(facts({ resourceServer: releasing({ claims: ['name', 'groups'] }) }));
    expect(claims).toMatchObject({ name: 'Alice', groups: ['eng'] });
    for (const claim of ['email', 'email_verified', 'preferred_username']) expect(claims).not.toHaveProperty(claim);
  });

  test('a released claim the user lacks is absent, not empty', () => {
    const claims = idJagClaims(facts({ resourceServer: releasing({ claims: ['email', 'email_verified', 'name'] }), subject: subject({ user: user({ email: null, name: null }) }) }));
    for (const claim of ['email', 'email_verified', 'name']) expect(claims).not.toHaveProperty(claim);
  });

  test('aud_sub when the user has one at this Resource AS, whatever is released', () => {
    expect(idJagClaims(facts({ resourceServer: releasing({}), audSub: 'todo-0042' }))).toMatchObject({ aud_sub: 'todo-0042' });
    expect(idJagClaims(facts())).not.toHaveProperty('aud_sub');
  });

  test.each([
    ['email', {}, { format: 'email', email: 'alice@example.com' }],
    ['iss_sub', {}, { format: 'iss_sub', iss: ISSUER, sub: 'sub-alice' }],
    ['opaque', { audSub: 'todo-0042' }, { format: 'opaque', id: 'todo-0042' }],
  ] as const)('sub_id in the %s format', (format, over, expected) => {
    expect(idJagClaims(facts({ resourceServer: releasing({ subIdFormat: format }), ...over })).sub_id).toEqual(expected);
  });

  test('no sub_id when the format needs what the user lacks (no email, no aud_sub), or none is configured', () => {
    expect(idJagClaims(facts({ resourceServer: releasing({ subIdFormat: 'email' }), subject: subject({ user: user({ email: null }) }) }))).not.toHaveProperty('sub_id');
    expect(idJagClaims(facts({ resourceServer: releasing({ subIdFormat: 'opaque' }) }))).not.toHaveProperty('sub_id');
    expect(idJagClaims(facts())).not.toHaveProperty('sub_id');
  });

  test('tenant from the IdP, aud_tenant from the Resource AS', () => {
    expect(idJagClaims(facts({ tenant: 'acme', resourceServer: releasing({ audTenant: 'todo-eu' }) }))).toMatchObject({ tenant: 'acme', aud_tenant: 'todo-eu' });
    const none = idJagClaims(facts());
    expect(none).not.toHaveProperty('tenant');
    expect(none).not.toHaveProperty('aud_tenant');
  });

  test('the granted authorization_details, as objects; none granted, no claim', () => {
    const details = [{ type: 'todo_list', actions: ['read'], locations: [MCP] }];
    expect(idJagClaims(facts({ authorizationDetails: details })).authorization_details).toEqual(details);
    expect(idJagClaims(facts({ authorizationDetails: [] }))).not.toHaveProperty('authorization_details');
  });
});

describe('lintClaims', () => {
  test('email or aud_sub: no warning', () => {
    expect(lintClaims({ aud: RS_ISSUER, email: 'alice@example.com' })).toEqual([]);
    expect(lintClaims({ aud: RS_ISSUER, aud_sub: 'todo-0042' })).toEqual([]);
  });

  test('neither: no_email_or_aud_sub, naming the Resource AS and the draft section', () => {
    const [warning, ...rest] = lintClaims({ aud: RS_ISSUER });
    expect(rest).toEqual([]);
    expect(warning).toMatchObject({ code: 'no_email_or_aud_sub', message: expect.stringContaining(RS_ISSUER), section: expect.stringContaining('§3') });
  });
});

const claims: IdJagClaims = { iss: ISSUER, sub: 'sub-alice', aud: RS_ISSUER, client_id: CLIENT_ID, resource: MCP, scope: 'todos.read' };

describe('previewMinter', () => {
  test('no JWT; the lifetime and a placeholder jti', async () => {
    const minted = await previewMinter.mint(claims, 300, NOW);
    expect(minted).toEqual({ jti: '(preview)', iat: NOW, exp: NOW + 300 });
    expect(previewMinter.describe(minted)).toBe(`preview, not signed: would expire ${new Date((NOW + 300) * 1000).toISOString()}`);
  });
});

describe('signingMinter', () => {
  test('signs with the current ID-JAG key: typ, kid, iat, exp and a fresh jti', async () => {
    const key = await signingKey('id_jag');
    const minter = signingMinter(() => key);
    const minted = await minter.mint(claims, 300, NOW);
    expect(decodeProtectedHeader(minted.jwt!)).toEqual({ alg: 'ES256', typ: ID_JAG_TYP, kid: key.kid });
    const { payload } = await jwtVerify(minted.jwt!, key.publicKey, { typ: ID_JAG_TYP, issuer: ISSUER, audience: RS_ISSUER, currentDate: new Date(NOW * 1000) });
    expect(payload).toEqual({ ...claims, iat: NOW, exp: NOW + 300, jti: minted.jti });
    expect(minted).toMatchObject({ iat: NOW, exp: NOW + 300 });
    // a UUIDv7 (RFC 9562 §5.7)
    expect(minted.jti).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect((await minter.mint(claims, 300, NOW)).jti).not.toBe(minted.jti);
    // the request's own id, when it has one: its audit row's id
    expect((await signingMinter(() => key, '01a22e1d-626d-7b9c-a6c3-7567982f9eb2').mint(claims, 300, NOW)).jti).toBe('01a22e1d-626d-7b9c-a6c3-7567982f9eb2');
    expect(minter.describe(minted)).toBe(`jti ${minted.jti}, expires ${new Date((NOW + 300) * 1000).toISOString()}`);
  });

  test('looks the key up on every call, so a rotation takes effect at once', async () => {
    const [first, second] = await Promise.all([signingKey('id_jag'), signingKey('id_jag')]);
    let current = first;
    const minter = signingMinter(() => current);
    const before = await minter.mint(claims, 60, NOW);
    current = second;
    const after = await minter.mint(claims, 60, NOW);
    expect(decodeProtectedHeader(before.jwt!).kid).toBe(first.kid);
    expect(decodeProtectedHeader(after.jwt!).kid).toBe(second.kid);
    await expect(jwtVerify(after.jwt!, second.publicKey, { currentDate: new Date(NOW * 1000) })).resolves.toBeDefined();
    await expect(jwtVerify(after.jwt!, first.publicKey, { currentDate: new Date(NOW * 1000) })).rejects.toThrow('signature verification failed');
  });
});

const request = (over: Partial<ExchangeRequest> = {}): ExchangeRequest => ({
  clientId: CLIENT_ID, subjectToken: 't', subjectTokenType: ID_TOKEN, audience: RS_ISSUER, resources: [MCP], scopes: ['todos.read'], ...over,
});
const codes = (warnings: { code: string }[]) => warnings.map((w) => w.code);

describe('lintRequest', () => {
  test('a request as recommended: no warning', () => {
    expect(lintRequest({ credentialsInBody: false }, request())).toEqual([]);
  });

  test.each<[string, Partial<ExchangeRequest>, boolean]>([
    ['resource_omitted', { resources: [] }, false],
    ['several_resources', { resources: [MCP, MCP_ADMIN] }, false],
    ['client_secret_post', {}, true],
    ['scope_omitted', { scopes: undefined }, false],
  ])('%s', (code, over, inBody) => {
    const warnings = lintRequest({ credentialsInBody: inBody }, request(over));
    expect(codes(warnings)).toEqual([code]);
    expect(warnings[0]?.message).toEqual(expect.any(String));
    expect(warnings[0]?.section).toMatch(/RFC \d+/);
  });

  test('all of them at once, in order', () => {
    expect(codes(lintRequest({ credentialsInBody: true }, request({ resources: [], scopes: undefined }))))
      .toEqual(['resource_omitted', 'client_secret_post', 'scope_omitted']);
  });
});

describe('lintTarget', () => {
  const target = (over: Partial<Target> = {}): Target => ({ resourceServer: resourceServer(), mcpServers: [mcpServer()], ...over });

  test('the issuer as audience and scopes the server defines: no warning', () => {
    expect(lintTarget(request({ scopes: ['todos.read', 'todos.write'] }), target())).toEqual([]);
  });

  test('audience_alias: names the issuer to use instead', () => {
    const [warning, ...rest] = lintTarget(request({ audience: RS_ALIAS }), target());
    expect(rest).toEqual([]);
    expect(warning).toMatchObject({ code: 'audience_alias', message: `audience ${RS_ALIAS} is an alias; the Resource AS's issuer identifier is ${RS_ISSUER}` });
  });

  test('scope_not_defined: names the scopes no requested server defines', () => {
    const warnings = lintTarget(request({ scopes: ['todos.read', 'mail.send', 'x'] }), target());
    expect(codes(warnings)).toEqual(['scope_not_defined']);
    expect(warnings[0]?.message).toMatch(/^requested scopes mail\.send x are not defined by the requested MCP server \(/);
  });

  test('no scope_not_defined without scopes, or for an audience-only request', () => {
    expect(lintTarget(request({ scopes: undefined }), target())).toEqual([]);
    expect(lintTarget(request({ scopes: ['anything'], resources: [] }), target({ mcpServers: [] }))).toEqual([]);
  });
});
