/**
 * The policy engine as a decision table: each row is a request's facts, the candidate rules, and the one
 * decision expected. Every row also checks the properties every decision must have (see `check`), and the
 * table as a whole is run again to show that `decide` is deterministic and leaves its inputs alone.
 */
import {
  decide, MAX_LIFETIME,
  type Allow, type Decision, type Deny, type DenyReason, type McpServerFacts, type PolicyError, type PolicyInput, type Rule, type Subjects,
} from '../src/policy/index.ts';

const NOW = 1_700_000_000;
const CLIENT = 'app-client';
const AS = 'as-main';

const FILES: McpServerFacts = { id: 'mcp-files', resource: 'https://files.example/mcp', enabled: true, scopes: ['read', 'write', 'admin'] };
const MAIL: McpServerFacts = { id: 'mcp-mail', resource: 'https://mail.example/mcp', enabled: true, scopes: ['read', 'send'] };

const ALICE: PolicyInput['user'] = { sub: 'sub-alice', groups: ['grp-eng', 'grp-staff'] };
const BOB: PolicyInput['user'] = { sub: 'sub-bob', groups: [] };

const EVERYONE: Subjects = { kind: 'everyone' };
const groups = (...names: string[]): Subjects => ({ kind: 'groups', groups: names });
const users = (...subs: string[]): Subjects => ({ kind: 'users', subs });

/** An enabled, AS-wide rule of CLIENT for everyone: scopes read and write, read by default, 300 s. */
function rule(id: string, over: Partial<Omit<Rule, 'id'>> = {}): Rule {
  return {
    id,
    clientId: CLIENT,
    resourceServerId: AS,
    mcpServerId: null,
    subjects: EVERYONE,
    scopes: ['read', 'write'],
    defaultScopes: ['read'],
    rsClientId: null,
    lifetime: 300,
    maxAuthAge: null,
    enabled: true,
    notBefore: null,
    expiresAt: null,
    ...over,
  };
}

/**
 * Alice, logged in a minute ago, asks for `read` on FILES through CLIENT. `over` replaces facts; an override
 * of undefined removes the property, as the token endpoint does when `scope` or `auth_time` is absent.
 */
function request(over: Partial<PolicyInput> = {}): PolicyInput {
  const input: PolicyInput = {
    client: { id: CLIENT },
    user: ALICE,
    resourceServer: { id: AS },
    mcpServers: [FILES],
    requestedScopes: ['read'],
    authTime: NOW - 60,
    now: NOW,
    ...over,
  };
  if (input.requestedScopes === undefined) delete input.requestedScopes;
  if (input.authTime === undefined) delete input.authTime;
  return input;
}

type Expected = Omit<Allow, 'explanation'> | Omit<Deny, 'explanation' | 'description'>;

const allowed = (ruleIds: string[], scopes: string[], { lifetime = 300, rsClientId = CLIENT } = {}): Expected =>
  ({ allow: true, ruleIds, scopes, lifetime, rsClientId });

const denied = (reason: DenyReason, error: PolicyError, ruleIds: string[] = [], maxAge?: number): Expected =>
  ({ allow: false, reason, error, ruleIds, ...(maxAge !== undefined ? { maxAge } : {}) });

interface Case {
  name: string;
  rules: Rule[];
  input: PolicyInput;
  expected: Expected;
}

const cases: Case[] = [
  // --- which rules are candidates ---
  { name: 'default deny: no rules at all', rules: [], input: request(), expected: denied('no_rule', 'invalid_target') },
  {
    name: 'a rule for another client does not apply',
    rules: [rule('rule-other-client', { clientId: 'other-client' })],
    input: request(),
    expected: denied('no_rule', 'invalid_target'),
  },
  {
    name: 'a rule for another Resource AS does not apply',
    rules: [rule('rule-other-as', { resourceServerId: 'as-other' })],
    input: request(),
    expected: denied('no_rule', 'invalid_target'),
  },
  {
    name: 'a rule for another MCP server does not apply',
    rules: [rule('rule-mail', { mcpServerId: MAIL.id })],
    input: request({ mcpServers: [FILES] }),
    expected: denied('no_rule', 'invalid_target'),
  },
  {
    name: 'an MCP-specific rule does not cover an audience-only request',
    rules: [rule('rule-files', { mcpServerId: FILES.id })],
    input: request({ mcpServers: [] }),
    expected: denied('no_rule', 'invalid_target'),
  },
  {
    name: 'an AS-wide rule covers an audience-only request, limited by its own scopes only',
    rules: [rule('rule-as', { scopes: ['read', 'send', 'custom'] })],
    input: request({ mcpServers: [], requestedScopes: ['read', 'custom', 'admin'] }),
    expected: allowed(['rule-as'], ['read', 'custom']),
  },
  {
    name: 'an AS-wide rule covers an MCP server of its AS',
    rules: [rule('rule-as')],
    input: request({ mcpServers: [FILES], requestedScopes: ['read', 'write'] }),
    expected: allowed(['rule-as'], ['read', 'write']),
  },
  {
    name: 'an AS-wide rule covers every MCP server of its AS',
    rules: [rule('rule-as', { scopes: ['read', 'send'] })],
    input: request({ mcpServers: [MAIL], requestedScopes: ['send'] }),
    expected: allowed(['rule-as'], ['send']),
  },
  {
    name: 'an MCP-specific rule covers its own MCP server',
    rules: [rule('rule-files', { mcpServerId: FILES.id })],
    input: request({ mcpServers: [FILES] }),
    expected: allowed(['rule-files'], ['read']),
  },

  // --- disabled things ---
  {
    name: 'a disabled rule does not apply: rule_disabled',
    rules: [rule('rule-off', { enabled: false })],
    input: request(),
    expected: denied('rule_disabled', 'invalid_target', ['rule-off']),
  },
  {
    name: 'every candidate rule disabled: all of them are named',
    rules: [rule('rule-off-wide', { enabled: false }), rule('rule-off-files', { mcpServerId: FILES.id, enabled: false })],
    input: request(),
    expected: denied('rule_disabled', 'invalid_target', ['rule-off-files', 'rule-off-wide']),
  },
  {
    name: 'a disabled rule is skipped when an enabled one applies, even if it would grant more',
    rules: [rule('rule-off', { enabled: false, scopes: ['read', 'write', 'admin'] }), rule('rule-on')],
    input: request({ requestedScopes: ['read', 'write', 'admin'] }),
    expected: allowed(['rule-on'], ['read', 'write']),
  },
  // A disabled client, user, Resource AS or MCP server never reaches the engine: client authentication, the
  // user check and the target own those (test/unit/request.test.ts, test/unit/pipeline.test.ts,
  // test/exchange-parity.test.ts), so the engine has no input for them.

  // --- subjects ---
  {
    name: 'everyone covers a user in no group',
    rules: [rule('rule-everyone', { subjects: EVERYONE })],
    input: request({ user: BOB }),
    expected: allowed(['rule-everyone'], ['read']),
  },
  {
    name: 'groups: one group in common is enough',
    rules: [rule('rule-groups', { subjects: groups('grp-sales', 'grp-staff') })],
    input: request({ user: ALICE }),
    expected: allowed(['rule-groups'], ['read']),
  },
  {
    name: 'groups: no group in common: subject_not_allowed',
    rules: [rule('rule-sales', { subjects: groups('grp-sales', 'grp-finance') })],
    input: request({ user: ALICE }),
    expected: denied('subject_not_allowed', 'invalid_target', ['rule-sales']),
  },
  {
    name: 'groups: a user in no group is not covered',
    rules: [rule('rule-eng', { subjects: groups('grp-eng') })],
    input: request({ user: BOB }),
    expected: denied('subject_not_allowed', 'invalid_target', ['rule-eng']),
  },
  {
    name: 'users: a listed sub is covered',
    rules: [rule('rule-users', { subjects: users('sub-carol', 'sub-alice') })],
    input: request({ user: ALICE }),
    expected: allowed(['rule-users'], ['read']),
  },
  {
    name: 'users: a sub not listed is not covered',
    rules: [rule('rule-carol', { subjects: users('sub-carol') })],
    input: request({ user: ALICE }),
    expected: denied('subject_not_allowed', 'invalid_target', ['rule-carol']),
  },
  {
    name: 'users match subs, not group names',
    rules: [rule('rule-users', { subjects: users('grp-eng') })],
    input: request({ user: ALICE }),
    expected: denied('subject_not_allowed', 'invalid_target', ['rule-users']),
  },
  {
    name: 'groups match group names, not subs',
    rules: [rule('rule-groups', { subjects: groups('sub-alice') })],
    input: request({ user: ALICE }),
    expected: denied('subject_not_allowed', 'invalid_target', ['rule-groups']),
  },
  {
    name: 'subject_not_allowed names only the enabled rules',
    rules: [rule('rule-alice-off', { subjects: users('sub-alice'), enabled: false }), rule('rule-sales', { subjects: groups('grp-sales') })],
    input: request({ user: ALICE }),
    expected: denied('subject_not_allowed', 'invalid_target', ['rule-sales']),
  },

  // --- scopes ---
  {
    name: 'granted = requested ∩ rule scopes ∩ the MCP server\'s scopes',
    rules: [rule('rule-as', { scopes: ['read', 'write', 'send'] })],
    input: request({ mcpServers: [FILES], requestedScopes: ['read', 'write', 'admin', 'send'] }),
    expected: allowed(['rule-as'], ['read', 'write']),
  },
  {
    name: 'granted scopes keep the requested order, without duplicates',
    rules: [rule('rule-as')],
    input: request({ requestedScopes: ['write', 'read', 'write'] }),
    expected: allowed(['rule-as'], ['write', 'read']),
  },
  {
    name: 'no scope parameter: the rule\'s default scopes',
    rules: [rule('rule-as', { defaultScopes: ['write'] })],
    input: request({ requestedScopes: undefined }),
    expected: allowed(['rule-as'], ['write']),
  },
  {
    name: 'an empty scope list counts as no scope parameter',
    rules: [rule('rule-as', { defaultScopes: ['read', 'write'] })],
    input: request({ requestedScopes: [] }),
    expected: allowed(['rule-as'], ['read', 'write']),
  },
  {
    name: 'default scopes are limited by the rule\'s scopes and the MCP server\'s scopes too',
    rules: [rule('rule-as', { scopes: ['read', 'write', 'send'], defaultScopes: ['read', 'send', 'admin'] })],
    input: request({ mcpServers: [FILES], requestedScopes: undefined }),
    expected: allowed(['rule-as'], ['read']),
  },
  {
    name: 'no scope requested and no default scopes: no_scope_requested',
    rules: [rule('rule-as', { defaultScopes: [] })],
    input: request({ requestedScopes: undefined }),
    expected: denied('no_scope_requested', 'invalid_scope', ['rule-as']),
  },
  {
    name: 'no scope requested and no default scope grantable: no_scope_requested',
    rules: [rule('rule-as', { scopes: ['read', 'send'], defaultScopes: ['send'] })],
    input: request({ mcpServers: [FILES], requestedScopes: [] }),
    expected: denied('no_scope_requested', 'invalid_scope', ['rule-as']),
  },
  {
    name: 'none of the requested scopes in the rule: scope_not_allowed',
    rules: [rule('rule-as', { scopes: ['read', 'write'] })],
    input: request({ requestedScopes: ['admin'] }),
    expected: denied('scope_not_allowed', 'invalid_scope', ['rule-as']),
  },
  {
    name: 'a scope the rule allows but the MCP server does not define: scope_not_allowed',
    rules: [rule('rule-as', { scopes: ['read', 'send'] })],
    input: request({ mcpServers: [FILES], requestedScopes: ['send'] }),
    expected: denied('scope_not_allowed', 'invalid_scope', ['rule-as']),
  },
  {
    name: 'scope_not_allowed on an audience-only request',
    rules: [rule('rule-as', { scopes: ['read'] })],
    input: request({ mcpServers: [], requestedScopes: ['write'] }),
    expected: denied('scope_not_allowed', 'invalid_scope', ['rule-as']),
  },

  // --- choosing among applicable rules ---
  {
    name: 'the rule granting the most scopes wins over a more specific one',
    rules: [
      rule('rule-wide', { scopes: ['read', 'write'], lifetime: 600, rsClientId: 'rs-wide' }),
      rule('rule-specific', { mcpServerId: FILES.id, subjects: users('sub-alice'), scopes: ['read'], lifetime: 120, rsClientId: 'rs-specific' }),
    ],
    input: request({ requestedScopes: ['read', 'write'] }),
    expected: allowed(['rule-wide'], ['read', 'write'], { lifetime: 600, rsClientId: 'rs-wide' }),
  },
  {
    name: 'equal scopes: an MCP-specific rule wins over an AS-wide one, even one naming the user',
    rules: [
      rule('rule-a-wide', { subjects: users('sub-alice'), lifetime: 600, rsClientId: 'rs-wide' }),
      rule('rule-z-specific', { mcpServerId: FILES.id, lifetime: 120, rsClientId: 'rs-specific' }),
    ],
    input: request(),
    expected: allowed(['rule-z-specific'], ['read'], { lifetime: 120, rsClientId: 'rs-specific' }),
  },
  {
    name: 'equal scopes and target: users win over groups',
    rules: [
      rule('rule-a-groups', { subjects: groups('grp-eng'), lifetime: 600, rsClientId: 'rs-groups' }),
      rule('rule-z-users', { subjects: users('sub-alice'), lifetime: 120, rsClientId: 'rs-users' }),
    ],
    input: request(),
    expected: allowed(['rule-z-users'], ['read'], { lifetime: 120, rsClientId: 'rs-users' }),
  },
  {
    name: 'equal scopes and target: groups win over everyone',
    rules: [
      rule('rule-a-everyone', { lifetime: 600, rsClientId: 'rs-everyone' }),
      rule('rule-z-groups', { subjects: groups('grp-staff'), lifetime: 120, rsClientId: 'rs-groups' }),
    ],
    input: request(),
    expected: allowed(['rule-z-groups'], ['read'], { lifetime: 120, rsClientId: 'rs-groups' }),
  },
  {
    name: 'a full tie: the lowest id wins, whatever the rules\' order',
    rules: [
      rule('rule-b', { lifetime: 600, rsClientId: 'rs-b' }),
      rule('rule-a', { lifetime: 120, rsClientId: 'rs-a' }),
      rule('rule-c', { lifetime: 900, rsClientId: 'rs-c' }),
    ],
    input: request(),
    expected: allowed(['rule-a'], ['read'], { lifetime: 120, rsClientId: 'rs-a' }),
  },
  {
    name: 'a rule that does not cover the user cannot win, however much it grants',
    rules: [rule('rule-bigger', { subjects: groups('grp-sales'), scopes: ['read', 'write', 'admin'] }), rule('rule-smaller', { scopes: ['read'] })],
    input: request({ requestedScopes: ['read', 'write', 'admin'] }),
    expected: allowed(['rule-smaller'], ['read']),
  },
  {
    name: 'no scope requested: the rule with the most grantable defaults wins',
    rules: [rule('rule-a', { defaultScopes: ['read'], lifetime: 600 }), rule('rule-b', { defaultScopes: ['read', 'write'], lifetime: 120 })],
    input: request({ requestedScopes: undefined }),
    expected: allowed(['rule-b'], ['read', 'write'], { lifetime: 120 }),
  },

  // --- rsClientId ---
  {
    name: 'rsClientId defaults to the IdP client id',
    rules: [rule('rule-as', { rsClientId: null })],
    input: request(),
    expected: allowed(['rule-as'], ['read'], { rsClientId: CLIENT }),
  },
  {
    name: 'rsClientId comes from the rule when set',
    rules: [rule('rule-as', { rsClientId: 'rs-app' })],
    input: request(),
    expected: allowed(['rule-as'], ['read'], { rsClientId: 'rs-app' }),
  },

  // --- several MCP servers ---
  {
    name: 'several MCP servers: only the scopes every one of them grants',
    rules: [rule('rule-as', { scopes: ['read', 'write', 'send'] })],
    input: request({ mcpServers: [FILES, MAIL], requestedScopes: ['read', 'write', 'send'] }),
    expected: allowed(['rule-as'], ['read']),
  },
  {
    name: 'several MCP servers: each rule named once, the shortest lifetime',
    rules: [
      rule('rule-files', { mcpServerId: FILES.id, lifetime: 600, rsClientId: 'rs-app' }),
      rule('rule-mail', { mcpServerId: MAIL.id, scopes: ['read', 'send'], lifetime: 120, rsClientId: 'rs-app' }),
    ],
    input: request({ mcpServers: [FILES, MAIL], requestedScopes: ['read'] }),
    expected: allowed(['rule-files', 'rule-mail'], ['read'], { lifetime: 120, rsClientId: 'rs-app' }),
  },
  {
    name: 'several MCP servers: each picks its own best rule',
    rules: [rule('rule-as'), rule('rule-mail', { mcpServerId: MAIL.id, scopes: ['read', 'send'], lifetime: 60 })],
    input: request({ mcpServers: [FILES, MAIL], requestedScopes: ['read'] }),
    expected: allowed(['rule-as', 'rule-mail'], ['read'], { lifetime: 60 }),
  },
  {
    name: 'several MCP servers: a null rsClientId agrees with one set to the IdP client id',
    rules: [rule('rule-files', { mcpServerId: FILES.id, rsClientId: null }), rule('rule-mail', { mcpServerId: MAIL.id, scopes: ['read'], rsClientId: CLIENT })],
    input: request({ mcpServers: [FILES, MAIL] }),
    expected: allowed(['rule-files', 'rule-mail'], ['read'], { rsClientId: CLIENT }),
  },
  {
    name: 'several MCP servers: rules mapping to different rsClientIds disagree',
    rules: [rule('rule-files', { mcpServerId: FILES.id, rsClientId: 'rs-one' }), rule('rule-mail', { mcpServerId: MAIL.id, scopes: ['read'], rsClientId: 'rs-two' })],
    input: request({ mcpServers: [FILES, MAIL] }),
    expected: denied('rules_disagree', 'invalid_target', ['rule-files', 'rule-mail']),
  },
  {
    name: 'several MCP servers: the IdP client id by default disagrees with another rsClientId',
    rules: [rule('rule-files', { mcpServerId: FILES.id, rsClientId: null }), rule('rule-mail', { mcpServerId: MAIL.id, scopes: ['read'], rsClientId: 'rs-two' })],
    input: request({ mcpServers: [FILES, MAIL] }),
    expected: denied('rules_disagree', 'invalid_target', ['rule-files', 'rule-mail']),
  },
  {
    name: 'several MCP servers: no scope common to all: scope_not_allowed',
    rules: [rule('rule-files', { mcpServerId: FILES.id, scopes: ['write'] }), rule('rule-mail', { mcpServerId: MAIL.id, scopes: ['send'] })],
    input: request({ mcpServers: [FILES, MAIL], requestedScopes: ['write', 'send'] }),
    expected: denied('scope_not_allowed', 'invalid_scope', ['rule-files', 'rule-mail']),
  },
  {
    name: 'several MCP servers: one without a rule denies the whole request',
    rules: [rule('rule-files', { mcpServerId: FILES.id })],
    input: request({ mcpServers: [FILES, MAIL] }),
    expected: denied('no_rule', 'invalid_target'),
  },

  // --- step-up ---
  {
    name: 'step-up: a login older than maxAuthAge: insufficient_user_authentication with maxAge',
    rules: [rule('rule-as', { maxAuthAge: 300 })],
    input: request({ authTime: NOW - 301 }),
    expected: denied('step_up_required', 'insufficient_user_authentication', ['rule-as'], 300),
  },
  {
    name: 'step-up: an unknown login time is too old',
    rules: [rule('rule-as', { maxAuthAge: 300 })],
    input: request({ authTime: undefined }),
    expected: denied('step_up_required', 'insufficient_user_authentication', ['rule-as'], 300),
  },
  {
    name: 'step-up: a login exactly maxAuthAge ago is fresh enough',
    rules: [rule('rule-as', { maxAuthAge: 300 })],
    input: request({ authTime: NOW - 300 }),
    expected: allowed(['rule-as'], ['read']),
  },
  {
    name: 'step-up: a recent login is fresh enough',
    rules: [rule('rule-as', { maxAuthAge: 300 })],
    input: request({ authTime: NOW - 10 }),
    expected: allowed(['rule-as'], ['read']),
  },
  {
    name: 'step-up: no maxAuthAge, an unknown login time is fine',
    rules: [rule('rule-as', { maxAuthAge: null })],
    input: request({ authTime: undefined }),
    expected: allowed(['rule-as'], ['read']),
  },
  {
    name: 'step-up: several MCP servers, the strictest maxAuthAge applies',
    rules: [
      rule('rule-files', { mcpServerId: FILES.id, maxAuthAge: 600 }),
      rule('rule-mail', { mcpServerId: MAIL.id, scopes: ['read'], maxAuthAge: 60 }),
    ],
    input: request({ mcpServers: [FILES, MAIL], authTime: NOW - 120 }),
    expected: denied('step_up_required', 'insufficient_user_authentication', ['rule-files', 'rule-mail'], 60),
  },

  // --- time-bound rules: in force from notBefore (inclusive) until expiresAt (exclusive) ---
  {
    name: 'time-bound: expiresAt one second ahead: still in force',
    rules: [rule('rule-temp', { expiresAt: NOW + 1 })],
    input: request(),
    expected: allowed(['rule-temp'], ['read']),
  },
  {
    name: 'time-bound: expiresAt exactly now: expired (the bound is exclusive)',
    rules: [rule('rule-temp', { expiresAt: NOW })],
    input: request(),
    expected: denied('rule_expired', 'invalid_target', ['rule-temp']),
  },
  {
    name: 'time-bound: notBefore exactly now: in force (the bound is inclusive)',
    rules: [rule('rule-later', { notBefore: NOW })],
    input: request(),
    expected: allowed(['rule-later'], ['read']),
  },
  {
    name: 'time-bound: notBefore one second ahead: rule_not_yet_valid',
    rules: [rule('rule-later', { notBefore: NOW + 1 })],
    input: request(),
    expected: denied('rule_not_yet_valid', 'invalid_target', ['rule-later']),
  },
  {
    name: 'time-bound: inside a window with both bounds',
    rules: [rule('rule-window', { notBefore: NOW - 3600, expiresAt: NOW + 3600 })],
    input: request(),
    expected: allowed(['rule-window'], ['read']),
  },
  {
    name: 'time-bound: the last second of a window is in it, the next is not',
    rules: [rule('rule-window', { notBefore: NOW - 3600, expiresAt: NOW })],
    input: request({ now: NOW - 1 }),
    expected: allowed(['rule-window'], ['read']),
  },
  {
    name: 'time-bound: an expired rule is skipped when a rule in force applies, even if it would grant more',
    rules: [rule('rule-expired', { expiresAt: NOW - 1, scopes: ['read', 'write', 'admin'] }), rule('rule-files', { mcpServerId: FILES.id, subjects: groups('grp-eng') })],
    input: request({ requestedScopes: ['read', 'write', 'admin'] }),
    expected: allowed(['rule-files'], ['read', 'write']),
  },
  {
    name: 'time-bound: the rule covering the user expired while another group\'s rule is in force: rule_expired names it',
    rules: [rule('rule-eng', { subjects: groups('grp-eng'), expiresAt: NOW - 60 }), rule('rule-sales', { subjects: groups('grp-sales') })],
    input: request(),
    expected: denied('rule_expired', 'invalid_target', ['rule-eng']),
  },
  {
    name: 'time-bound: subjects are checked first: an expired rule not covering the user is subject_not_allowed',
    rules: [rule('rule-sales', { subjects: groups('grp-sales'), expiresAt: NOW - 60 })],
    input: request(),
    expected: denied('subject_not_allowed', 'invalid_target', ['rule-sales']),
  },
  {
    name: 'time-bound: one rule expired, another not yet valid: rule_not_yet_valid names both',
    rules: [rule('rule-past', { expiresAt: NOW - 60 }), rule('rule-next', { mcpServerId: FILES.id, notBefore: NOW + 60 })],
    input: request(),
    expected: denied('rule_not_yet_valid', 'invalid_target', ['rule-next', 'rule-past']),
  },
  {
    name: 'time-bound: a disabled rule stays rule_disabled, whatever its window',
    rules: [rule('rule-off', { enabled: false, expiresAt: NOW - 60 })],
    input: request(),
    expected: denied('rule_disabled', 'invalid_target', ['rule-off']),
  },
  {
    name: 'time-bound: several MCP servers, one server\'s only rule expired: the whole request is refused',
    rules: [
      rule('rule-files', { mcpServerId: FILES.id }),
      rule('rule-mail', { mcpServerId: MAIL.id, scopes: ['read'], expiresAt: NOW }),
    ],
    input: request({ mcpServers: [FILES, MAIL] }),
    expected: denied('rule_expired', 'invalid_target', ['rule-mail']),
  },

  // --- lifetime ---
  {
    name: 'lifetime is capped at MAX_LIFETIME',
    rules: [rule('rule-as', { lifetime: MAX_LIFETIME * 2 })],
    input: request(),
    expected: allowed(['rule-as'], ['read'], { lifetime: MAX_LIFETIME }),
  },
  {
    name: 'lifetime of exactly MAX_LIFETIME is kept',
    rules: [rule('rule-as', { lifetime: MAX_LIFETIME })],
    input: request(),
    expected: allowed(['rule-as'], ['read'], { lifetime: MAX_LIFETIME }),
  },
  {
    name: 'several MCP servers, all lifetimes over the cap: MAX_LIFETIME',
    rules: [
      rule('rule-files', { mcpServerId: FILES.id, lifetime: MAX_LIFETIME + 600 }),
      rule('rule-mail', { mcpServerId: MAIL.id, scopes: ['read'], lifetime: MAX_LIFETIME + 60 }),
    ],
    input: request({ mcpServers: [FILES, MAIL] }),
    expected: allowed(['rule-files', 'rule-mail'], ['read'], { lifetime: MAX_LIFETIME }),
  },
];

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** What a denial's client-facing description must not disclose: rule ids, group names, other users' subs. */
function policySecrets(rules: Rule[], user: PolicyInput['user']): string[] {
  return rules.flatMap((r) => [
    r.id,
    ...(r.subjects.kind === 'groups' ? r.subjects.groups : []),
    ...(r.subjects.kind === 'users' ? r.subjects.subs.filter((s) => s !== user.sub) : []),
  ]);
}

/** The parts of a decision that must not depend on the order the rules come in (the database gives none). */
function orderFree(d: Decision) {
  return { ...d, explanation: undefined, ruleIds: [...d.ruleIds].sort() };
}

describe('decide, as a decision table', () => {
  test.each(cases)('$name', ({ input, rules, expected }) => {
    // frozen: any write to the input or the rules throws (ES modules are strict)
    const decision = decide(deepFreeze(input), deepFreeze(rules));

    expect(decision).toEqual({
      ...expected,
      explanation: expect.any(String),
      ...(expected.allow ? {} : { description: expect.any(String) }),
    });
    for (const id of decision.ruleIds) expect(decision.explanation).toContain(id);
    if (!decision.allow) {
      expect(decision.description).not.toBe('');
      for (const secret of policySecrets(rules, input.user)) expect(decision.description).not.toContain(secret);
    }
  });

  test('the table exercises every deny reason and every error', () => {
    const reasons: Record<DenyReason, number> = {
      no_rule: 0, rule_disabled: 0, rule_expired: 0, rule_not_yet_valid: 0,
      subject_not_allowed: 0, rules_disagree: 0, scope_not_allowed: 0, no_scope_requested: 0, step_up_required: 0,
    };
    const errors: Record<PolicyError, number> = {
      invalid_target: 0, invalid_scope: 0, insufficient_user_authentication: 0,
    };
    let allows = 0;
    for (const { expected } of cases) {
      if (expected.allow) allows++;
      else {
        reasons[expected.reason]++;
        errors[expected.error]++;
      }
    }
    expect(allows).toBeGreaterThan(0);
    for (const [reason, n] of Object.entries(reasons)) expect([reason, n]).not.toEqual([reason, 0]);
    for (const [error, n] of Object.entries(errors)) expect([error, n]).not.toEqual([error, 0]);
  });

  test('case names are unique', () => {
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });
});

describe('decide, time-bound rules', () => {
  test('the explanation says the rule did not apply because it expired, or is not valid yet, and when', () => {
    const expired = decide(request(), [rule('rule-temp', { expiresAt: NOW - 3600 })]);
    expect(expired).toMatchObject({ allow: false, reason: 'rule_expired' });
    expect(expired.explanation).toContain(`rule rule-temp expired at ${new Date((NOW - 3600) * 1000).toISOString()}`);
    const later = decide(request(), [rule('rule-temp', { notBefore: NOW + 3600 })]);
    expect(later).toMatchObject({ allow: false, reason: 'rule_not_yet_valid' });
    expect(later.explanation).toContain(`rule rule-temp is valid from ${new Date((NOW + 3600) * 1000).toISOString()}`);
    // the client is told neither the rule nor its dates
    for (const d of [expired, later]) {
      if (d.allow) throw new Error('expected denials');
      expect(d.description).not.toContain('rule-temp');
      expect(d.description).not.toMatch(/\d{4}-\d\d-\d\d/);
    }
  });

  test('a rule\'s window is read against input.now only: the same rule and facts at two instants, two decisions', () => {
    const rules = [rule('rule-temp', { notBefore: NOW, expiresAt: NOW + 10 })];
    const at = (now: number) => decide(request({ now }), rules);
    expect([NOW - 1, NOW, NOW + 9, NOW + 10].map((t) => (at(t).allow ? 'allow' : (at(t) as Deny).reason)))
      .toEqual(['rule_not_yet_valid', 'allow', 'allow', 'rule_expired']);
  });
});

describe('decide, as a pure function', () => {
  test('the same facts give the same decision, every time', () => {
    for (const { input, rules } of cases) {
      const first = decide(structuredClone(input), structuredClone(rules));
      const second = decide(structuredClone(input), structuredClone(rules));
      expect(second).toEqual(first);
    }
  });

  test('the order of the rules does not change the decision', () => {
    for (const { input, rules } of cases) {
      const forward = decide(structuredClone(input), structuredClone(rules));
      const backward = decide(structuredClone(input), structuredClone(rules).reverse());
      expect([input, orderFree(backward)]).toEqual([input, orderFree(forward)]);
    }
  });

  test('it does not modify its inputs', () => {
    for (const { input, rules } of cases) {
      const [inputCopy, rulesCopy] = [structuredClone(input), structuredClone(rules)];
      decide(inputCopy, rulesCopy);
      expect([inputCopy, rulesCopy]).toEqual([input, rules]);
    }
  });

  test('the decision shares no array with its inputs, so a caller editing it cannot edit a rule', () => {
    const rules = [rule('rule-as', { defaultScopes: ['read', 'write'] })];
    const decision = decide(request({ requestedScopes: undefined }), rules);
    if (!decision.allow) throw new Error(`expected an allow, got ${decision.reason}`);
    decision.scopes.push('admin');
    decision.ruleIds.push('rule-x');
    expect(rules[0]).toEqual(rule('rule-as', { defaultScopes: ['read', 'write'] }));
  });
});
