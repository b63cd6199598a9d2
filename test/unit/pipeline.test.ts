/**
 * The exchange pipeline over in-memory ports: a directory, a catalog and rules held in arrays, the simulator's
 * assumed subject and previewing minter, a fixed clock. What it decides, which check each refusal is filed
 * under, and what the audit row would say.
 */
import type Provider from 'oidc-provider';
import { SignJWT } from 'jose';
import type { McpServerRecord, ResourceServerFacts } from '../../src/db/catalog.ts';
import type { User } from '../../src/db/users.ts';
import { DECISION_CHECKS, ID_TOKEN_CHECKS, REQUEST_CHECKS } from '../../src/exchange/checks.ts';
import { previewMinter, type Minter } from '../../src/exchange/mint.ts';
import { runExchange, type ExchangePorts, type ExchangeResult } from '../../src/exchange/pipeline.ts';
import { assumedSubject, tokenSubjects } from '../../src/exchange/subject.ts';
import type { Rule } from '../../src/policy/index.ts';
import {
  CLIENT_ID, input, ISSUER, MCP, mcpServer, NOW, resourceServer, RS_ALIAS, RS_ISSUER, rule, signingKey, user,
} from './fixtures.ts';

interface World {
  users: User[];
  groups: Record<string, string[]>;
  resourceServers: ResourceServerFacts[];
  /** alias → resource server id */
  aliases: Record<string, string>;
  mcpServers: McpServerRecord[];
  rules: Rule[];
  /** `${resource server id} ${sub}` → aud_sub */
  audSubs: Record<string, string>;
}

const world = (over: Partial<World> = {}): World => ({
  users: [user(), user({ sub: 'sub-bob', username: 'bob', disabled: 1 })],
  groups: { 'sub-alice': ['eng'] },
  resourceServers: [resourceServer()],
  aliases: { [RS_ALIAS]: 'rs-todo' },
  mcpServers: [mcpServer()],
  rules: [rule('r1')],
  audSubs: {},
  ...over,
});

/** Ports over `w`; `stages` collects what the stage observer is told. */
function portsOver(w: World, over: Partial<ExchangePorts> = {}): ExchangePorts & { stages: string[] } {
  const stages: string[] = [];
  return {
    subjects: assumedSubject('sub-alice', NOW - 30),
    directory: {
      member: async (sub) => {
        const user = w.users.find((u) => u.sub === sub);
        return user && { user, groups: w.groups[sub] ?? [] };
      },
    },
    catalog: {
      resourceServer: async (audience) => w.resourceServers.find((r) => r.issuer === audience || r.id === w.aliases[audience]),
      mcpServers: async (resources) => w.mcpServers.filter((m) => resources.includes(m.resource)),
      audienceSubject: async (rsId, sub) => w.audSubs[`${rsId} ${sub}`],
    },
    rules: { rulesFor: async (clientId, rsId) => w.rules.filter((r) => r.clientId === clientId && r.resourceServerId === rsId) },
    minter: previewMinter,
    issuer: ISSUER,
    clock: () => NOW,
    stage: (name) => stages.push(name),
    stages,
    ...over,
  };
}

const statusOf = (result: ExchangeResult) => Object.fromEntries(result.record.checks.map((c) => [c.name, c.status]));
const decisionStatuses = (result: ExchangeResult) => DECISION_CHECKS.map((d) => statusOf(result)[d.name]);

describe('issued', () => {
  test('every check passes; the record and the claims say what was granted', async () => {
    const ports = portsOver(world());
    const result = await runExchange(input(), ports);
    expect(result.outcome.kind).toBe('issued');
    expect(result.record).toEqual({
      decision: 'issued', reason: 'issued', explanation: 'allowed by rule r1: scopes todos.read, lifetime 300 s',
      sub: 'sub-alice', username: 'alice', scopesGranted: ['todos.read'], ruleIds: ['r1'], jti: '(preview)', exp: NOW + 300,
      checks: expect.any(Array), warnings: [],
    });
    expect(result.record.checks.map((c) => c.name)).toEqual([...REQUEST_CHECKS, ...DECISION_CHECKS].map((d) => d.name));
    expect(result.record.checks.every((c) => c.status === 'passed')).toBe(true);
    expect(result.record.checks.at(-1)?.message).toMatch(/^preview, not signed/);
    if (result.outcome.kind !== 'issued') return;
    expect(result.outcome.claims).toEqual({
      iss: ISSUER, sub: 'sub-alice', aud: RS_ISSUER, client_id: CLIENT_ID, resource: MCP, scope: 'todos.read', auth_time: NOW - 30, email: 'alice@example.com',
    });
    expect(result.outcome.subject.groups).toEqual(['eng']);
    expect(ports.stages).toEqual(['request', 'subject', 'target', 'policy', 'mint', 'end']);
  });

  test('an alias audience and no scope: the issuer as aud, the rule\'s client id and default scopes, and the warnings', async () => {
    const result = await runExchange(input({ audience: RS_ALIAS, scope: undefined }), portsOver(world({ rules: [rule('r1', { rsClientId: 'agent-at-todo', lifetime: 120 })] })));
    expect(result.outcome.kind === 'issued' && result.outcome.claims).toMatchObject({ aud: RS_ISSUER, client_id: 'agent-at-todo', scope: 'todos.read' });
    expect(result.record).toMatchObject({ decision: 'issued', exp: NOW + 120 });
    expect(result.record.warnings?.map((w) => w.code)).toEqual(['scope_omitted', 'audience_alias']);
  });

  test('with the subject token source, the ID Token\'s checks are planned between the request\'s and the decision\'s', async () => {
    const key = await signingKey('id_token');
    const token = await new SignJWT({ iss: ISSUER, aud: CLIENT_ID, sub: 'sub-alice', iat: NOW, exp: NOW + 600, auth_time: NOW - 10 })
      .setProtectedHeader({ alg: 'RS256', kid: key.kid }).sign(key.privateKey);
    // the provider is consulted for refresh tokens only
    const subjects = tokenSubjects({ issuer: ISSUER, keys: { keys: [key], fingerprint: key.kid }, provider: undefined as unknown as Provider });
    const result = await runExchange(input({ subject_token: token }), portsOver(world(), { subjects }));
    expect(result.record.decision).toBe('issued');
    expect(result.record.checks.map((c) => c.name)).toEqual([...REQUEST_CHECKS, ...ID_TOKEN_CHECKS, ...DECISION_CHECKS].map((d) => d.name));
    expect(result.record.checks.every((c) => c.status === 'passed')).toBe(true);
    expect(result.outcome.kind === 'issued' && result.outcome.claims.auth_time).toBe(NOW - 10);
  });
});

type Status = 'passed' | 'failed' | 'not_reached';
const P: Status = 'passed', F: Status = 'failed', N: Status = 'not_reached';

describe('target and policy denials, each filed under its check', () => {
  // decision checks: user, audience, resource, policy, scope, step_up, issue
  test.each([
    { reason: 'audience_disabled', w: world({ resourceServers: [resourceServer({ enabled: false })] }), check: 'audience', error: 'invalid_target', ruleIds: undefined,
      // the target stage refuses a disabled audience before it looks at the resource
      after: [P, F, N, N, N, N, N] },
    { reason: 'resource_disabled', w: world({ mcpServers: [mcpServer({ enabled: false })] }), check: 'resource', error: 'invalid_target', ruleIds: undefined, after: [P, P, F, N, N, N, N] },
    { reason: 'no_rule', w: world({ rules: [] }), check: 'policy', error: 'invalid_target', ruleIds: undefined, after: [P, P, P, F, N, N, N] },
    { reason: 'rule_disabled', w: world({ rules: [rule('r1', { enabled: false })] }), check: 'policy', error: 'invalid_target', ruleIds: ['r1'], after: [P, P, P, F, N, N, N] },
    { reason: 'subject_not_allowed', w: world({ rules: [rule('r1', { subjects: { kind: 'groups', groups: ['admins'] } })] }), check: 'policy', error: 'invalid_target', ruleIds: ['r1'], after: [P, P, P, F, N, N, N] },
  ])('$reason → $check', async ({ reason, w, check, error, ruleIds, after }) => {
    const result = await runExchange(input(), portsOver(w));
    expect(result.outcome.kind === 'denied' && result.outcome.rejection).toMatchObject({ check, reason, error });
    expect(result.record).toMatchObject({ decision: 'denied', reason, error, sub: 'sub-alice', username: 'alice' });
    expect(result.record.ruleIds).toEqual(ruleIds);
    expect(decisionStatuses(result)).toEqual(after);
  });

  test('scope_not_allowed → scope, policy passed', async () => {
    const result = await runExchange(input({ scope: 'todos.admin' }), portsOver(world()));
    expect(result.outcome.kind === 'denied' && result.outcome.rejection).toMatchObject({ check: 'scope', reason: 'scope_not_allowed', error: 'invalid_scope' });
    expect(result.record).toMatchObject({ decision: 'denied', reason: 'scope_not_allowed', ruleIds: ['r1'] });
    expect(decisionStatuses(result)).toEqual([P, P, P, P, F, N, N]);
    expect(result.record.warnings?.map((w) => w.code)).toEqual(['scope_not_defined']);
  });

  test('step_up_required → step_up with max_age, policy and scope passed', async () => {
    const ports = portsOver(world({ rules: [rule('r1', { maxAuthAge: 60 })] }), { subjects: assumedSubject('sub-alice', NOW - 3600) });
    const result = await runExchange(input(), ports);
    expect(result.outcome.kind === 'denied' && result.outcome.rejection).toMatchObject({
      check: 'step_up', reason: 'step_up_required', error: 'insufficient_user_authentication', maxAge: 60, description: expect.stringContaining('max_age=60'),
    });
    expect(result.record).toMatchObject({ decision: 'denied', error: 'insufficient_user_authentication', ruleIds: ['r1'] });
    expect(decisionStatuses(result)).toEqual([P, P, P, P, P, F, N]);
    expect(ports.stages).toEqual(['request', 'subject', 'target', 'policy', 'end']);
  });
});

describe('the user check', () => {
  test.each([
    { who: 'unknown', sub: 'sub-ghost', reason: 'user_unknown', explanation: 'user sub-ghost does not exist' },
    { who: 'disabled', sub: 'sub-bob', reason: 'user_disabled', explanation: 'user bob (sub-bob) is disabled' },
  ])('an $who user stops at the user check', async ({ sub, reason, explanation }) => {
    const ports = portsOver(world(), { subjects: assumedSubject(sub, NOW) });
    const result = await runExchange(input(), ports);
    expect(result.outcome.kind === 'denied' && result.outcome.rejection).toMatchObject({ check: 'user', reason, error: 'invalid_grant' });
    expect(result.record).toMatchObject({ decision: 'denied', reason, explanation, error: 'invalid_grant' });
    // the client is told less than the admin: the check's message names no user
    const userCheck = result.record.checks.find((c) => c.name === 'user');
    expect(userCheck).toMatchObject({ status: 'failed', explanation });
    expect(userCheck?.message).toMatch(/^the subject token's user (no longer exists|is disabled)$/);
    expect(decisionStatuses(result)).toEqual([F, N, N, N, N, N, N]);
    expect(ports.stages).toEqual(['request', 'subject', 'end']);
  });
});

describe('a request refused before any port is asked', () => {
  test('only the request checks are recorded, and the stages end after the request', async () => {
    const ports = portsOver(world());
    const result = await runExchange(input({ audience: undefined }), ports);
    expect(result.record).toMatchObject({ decision: 'denied', reason: 'audience_present', error: 'invalid_request', warnings: [] });
    expect(result.record.checks.map((c) => c.name)).toEqual(REQUEST_CHECKS.map((d) => d.name));
    expect(result.record).not.toHaveProperty('sub');
    expect(ports.stages).toEqual(['request', 'end']);
  });
});

describe('a port that fails', () => {
  test('the catalog throws: failed, nothing decided, the record an internal error', async () => {
    const boom = new Error('connection reset');
    const ports = portsOver(world());
    ports.catalog = { ...ports.catalog, resourceServer: async () => { throw boom; } };
    const result = await runExchange(input(), ports);
    expect(result.outcome).toEqual({ kind: 'failed', error: boom });
    expect(result.record).toMatchObject({
      decision: 'error', reason: 'internal_error', error: 'temporarily_unavailable', explanation: 'the exchange failed: connection reset', sub: 'sub-alice',
    });
    expect(decisionStatuses(result)).toEqual([P, N, N, N, N, N, N]);
    expect(ports.stages).toEqual(['request', 'subject', 'target', 'end']);
  });

  test('the minter throws: failed after every decision check passed, issue not reached', async () => {
    const broken: Minter = { mint: async () => { throw new Error('no active id_jag signing key'); }, describe: () => 'never' };
    const ports = portsOver(world(), { minter: broken });
    const result = await runExchange(input(), ports);
    expect(result.outcome.kind).toBe('failed');
    expect(result.record).toMatchObject({ decision: 'error', reason: 'internal_error', explanation: 'the exchange failed: no active id_jag signing key' });
    expect(result.record).not.toHaveProperty('jti');
    expect(decisionStatuses(result)).toEqual([P, P, P, P, P, P, N]);
    expect(ports.stages).toEqual(['request', 'subject', 'target', 'policy', 'mint', 'end']);
  });
});

describe('authorization_details (RFC 9396), decided after policy, before issuing', () => {
  const TODO = { type: 'todo_list', actions: ['read'], locations: [MCP] };
  const MAIL = { type: 'mail', actions: ['send'] };
  const withTypes = (...types: string[]) => world({ rules: [rule('r1', { authorizationDetailsTypes: types })] });
  const details = (...objects: object[]) => input({ authorization_details: JSON.stringify(objects) });
  const names = (result: ExchangeResult) => result.record.checks.map((c) => c.name);

  test('granted: the allowed objects go into the claims whole; the record names the types asked and granted', async () => {
    const result = await runExchange(details(TODO), portsOver(withTypes('todo_list')));
    expect(result.outcome.kind).toBe('issued');
    expect(result.outcome.kind === 'issued' && result.outcome.claims.authorization_details).toEqual([TODO]);
    expect(result.record).toMatchObject({ decision: 'issued', detailsRequested: ['todo_list'], detailsGranted: ['todo_list'] });
    expect(names(result)).toEqual([...REQUEST_CHECKS.map((d) => d.name), 'authorization_details.format', ...DECISION_CHECKS.slice(0, -1).map((d) => d.name), 'authorization_details.types', 'issue']);
    expect(result.record.checks.find((c) => c.name === 'authorization_details.types')?.message).toBe('granted todo_list');
  });

  test('narrowed: a type the rule does not allow is dropped, the others granted (draft §4.3.3: the IdP may grant fewer)', async () => {
    const result = await runExchange(details(TODO, MAIL), portsOver(withTypes('todo_list')));
    expect(result.outcome.kind === 'issued' && result.outcome.claims.authorization_details).toEqual([TODO]);
    expect(result.record).toMatchObject({ detailsRequested: ['todo_list', 'mail'], detailsGranted: ['todo_list'] });
    expect(result.record.checks.find((c) => c.name === 'authorization_details.types')?.message).toBe('granted todo_list; not granted: mail');
  });

  test('no allowed type: invalid_authorization_details at its check, naming the types and, for the admin only, the rule', async () => {
    const result = await runExchange(details(MAIL), portsOver(withTypes('todo_list')));
    expect(result.outcome.kind === 'denied' && result.outcome.rejection).toMatchObject({
      check: 'authorization_details.types', error: 'invalid_authorization_details', reason: 'authorization_details.types',
      description: 'none of the requested authorization_details types (mail) may be granted for this target',
    });
    expect(result.outcome.kind === 'denied' && result.outcome.rejection.description).not.toContain('r1');
    expect(result.record).toMatchObject({ decision: 'denied', ruleIds: ['r1'], detailsRequested: ['mail'], explanation: 'rule r1 allows the types todo_list; requested: mail' });
    expect(result.record).not.toHaveProperty('detailsGranted');
    expect(statusOf(result)).toMatchObject({ step_up: 'passed', 'authorization_details.types': 'failed', issue: 'not_reached' });
  });

  test('a rule allowing no type refuses any authorization_details', async () => {
    const result = await runExchange(details(TODO), portsOver(world()));
    expect(result.record).toMatchObject({ decision: 'denied', reason: 'authorization_details.types', explanation: 'rule r1 allows no authorization_details type; requested: todo_list' });
  });

  test('several resources: only the types every deciding rule allows', async () => {
    const admin = mcpServer({ id: 'mcp-admin', resource: 'https://mcp.todo.example/admin' });
    const w = world({
      mcpServers: [mcpServer(), admin],
      rules: [
        rule('r-todo', { mcpServerId: 'mcp-todo', authorizationDetailsTypes: ['todo_list', 'mail'] }),
        rule('r-admin', { mcpServerId: 'mcp-admin', authorizationDetailsTypes: ['todo_list'] }),
      ],
    });
    const result = await runExchange(input({ resource: [MCP, admin.resource], authorization_details: JSON.stringify([TODO, MAIL]) }), portsOver(w));
    expect(result.outcome.kind === 'issued' && result.outcome.claims.authorization_details).toEqual([TODO]);
  });

  test('malformed: refused at its format check, before the subject token or any port', async () => {
    const ports = portsOver(withTypes('todo_list'));
    const result = await runExchange(input({ authorization_details: '[{"actions":["read"]}]' }), ports);
    expect(result.record).toMatchObject({ decision: 'denied', reason: 'authorization_details.format', error: 'invalid_authorization_details' });
    expect(result.record).not.toHaveProperty('detailsRequested');
    expect(ports.stages).toEqual(['request', 'end']);
  });
});

describe('what the ID-JAG says about the user comes from the catalog port', () => {
  test('aud_sub mapped for this Resource AS: in the claims, and no warning', async () => {
    const w = world({ resourceServers: [resourceServer({ release: { claims: [], audTenant: 'todo-eu', subIdFormat: 'opaque' } })], audSubs: { 'rs-todo sub-alice': 'todo-0042' } });
    const result = await runExchange(input(), portsOver(w, { tenant: 'acme' }));
    expect(result.outcome.kind === 'issued' && result.outcome.claims).toMatchObject({ aud_sub: 'todo-0042', sub_id: { format: 'opaque', id: 'todo-0042' }, tenant: 'acme', aud_tenant: 'todo-eu' });
    expect(result.outcome.kind === 'issued' && result.outcome.claims).not.toHaveProperty('email');
    expect(result.record.warnings).toEqual([]);
  });

  test('neither email nor aud_sub: issued, with the no_email_or_aud_sub warning', async () => {
    const w = world({ resourceServers: [resourceServer({ release: { claims: ['name'], audTenant: null, subIdFormat: null } })] });
    const result = await runExchange(input(), portsOver(w));
    expect(result.record.decision).toBe('issued');
    expect(result.record.warnings?.map((x) => x.code)).toEqual(['no_email_or_aud_sub']);
  });
});
