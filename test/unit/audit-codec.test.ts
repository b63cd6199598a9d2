/** The audit row's format: what the writer encodes, every reader decodes, and a hand-edited row cannot break. */
import { AUDIT_RESOURCES_INDEXED } from '../../migrations/0008_audit_resources_index.ts';
import {
  CHECK_CODES, decodeChecks, decodeExplanation, encodeExplanation, decodeResources, decodeRuleIds, decodeTokenType, decodeWarnings, encodeChecks, encodeResources, encodeRuleIds,
  encodeTokenType, encodeWarnings, decodeOwnId, encodeOwnId, internable, rowFacts, withOwnIds,
  failedCheck, issuedDescription, MAX_TEXT, RESOURCES_INDEXED_MAX, text, type CheckRecord, type RowFacts, type WarningRecord,
} from '../../src/audit/codec.ts';
import { CHECKS_BY_NAME } from '../../src/exchange/checks.ts';
import { WARNING_CODES, WARNINGS } from '../../src/exchange/lint.ts';
import { decide } from '../../src/policy/index.ts';
import { CLIENT_ID, MCP, MCP_ADMIN, NOW, rule } from './fixtures.ts';

describe('checks', () => {
  const checks: CheckRecord[] = [
    { name: 'client_authentication', status: 'passed', message: 'authenticated with client_secret_basic' },
    { name: 'policy', status: 'failed', message: 'not allowed', explanation: 'no rule lets client agent reach MCP server x' },
    { name: 'issue', status: 'not_reached' },
  ];

  test('round trip', () => {
    expect(decodeChecks(encodeChecks(checks))).toEqual(checks);
    expect(decodeChecks(encodeChecks([]))).toEqual([]);
    expect(failedCheck(decodeChecks(encodeChecks(checks)))).toBe('policy');
    expect(failedCheck(checks.filter((c) => c.status !== 'failed'))).toBeUndefined();
  });

  test.each(['not json', '', '{"name":"policy","status":"failed"}', '"policy"', 'null', '42'])('a stored value that is no list reads as none: %j', (stored) => {
    expect(decodeChecks(stored)).toEqual([]);
  });

  test('entries that are not checks are dropped, stray fields ignored, wrong-typed messages left out', () => {
    const stored = JSON.stringify([
      { name: 'user', status: 'passed', message: 'alice', section: 'injected', extra: 1 },
      { name: 'scope', status: 'approved' },
      { name: 'step_up' },
      { status: 'failed' },
      { name: 7, status: 'failed' },
      null, 'audience', 3, 9999, -9999, 1.5,
      { name: 'issue', status: 'failed', message: 42, explanation: ['x'] },
    ]);
    // (a bare string is a check that passed with nothing to say, stored by name; a number, one stored by code)
    expect(decodeChecks(stored)).toEqual([
      { name: 'user', status: 'passed', message: 'alice' }, { name: 'audience', status: 'passed' },
      { name: 'grant_type_allowed', status: 'passed' }, { name: 'issue', status: 'failed' },
    ]);
  });

  test('the compact form: codes, -code-1 for not reached, tuples; names without a code by name; hostile tuples dropped', () => {
    const checks: CheckRecord[] = [
      { name: 'client_authentication', status: 'passed', message: 'authenticated with client_secret_basic' },
      { name: 'request_syntax', status: 'passed' },
      { name: 'policy', status: 'failed', message: 'this user may not use client x', explanation: 'rule r1 names group g' },
      { name: 'scope', status: 'not_reached' },
      { name: 'step_up', status: 'passed', explanation: 'only an explanation' },
      { name: 'future_check', status: 'passed' },
      { name: 'future_check', status: 'not_reached' },
      { name: 'future_check', status: 'failed', message: 'm' },
    ];
    const stored = encodeChecks(checks);
    const code = (name: string) => CHECK_CODES.indexOf(name);
    expect(JSON.parse(stored)).toEqual([
      code('client_authentication'), code('request_syntax'),
      [code('policy'), 'f', 'this user may not use client x', 'rule r1 names group g'], -code('scope') - 1, [code('step_up'), 'p', null, 'only an explanation'],
      'future_check', '-future_check', ['future_check', 'f', 'm'],
    ]);
    expect(decodeChecks(stored)).toEqual(checks);
    expect(decodeChecks(JSON.stringify([['x', 'z'], [7, 'p'], ['y'], ['ok', 'f', 3, 4], [9999, 'p']]))).toEqual([{ name: CHECK_CODES[7]!, status: 'passed' }, { name: 'ok', status: 'failed' }]);
  });

  test('rows written before codes (names, and the long form) read the same', () => {
    const old = JSON.stringify([['client_authentication', 'p', 'authenticated with client_secret_basic'], 'request_syntax', '-scope',
      { name: 'user', status: 'passed', message: 'alice' }]);
    expect(decodeChecks(old, facts)).toEqual([
      { name: 'client_authentication', status: 'passed', message: 'authenticated with client_secret_basic' },
      { name: 'request_syntax', status: 'passed' }, { name: 'scope', status: 'not_reached' }, { name: 'user', status: 'passed', message: 'alice' },
    ]);
  });

  test('every check the exchange defines, retired ones too, has a code; codes are unique', () => {
    expect([...CHECKS_BY_NAME.keys()].filter((name) => !CHECK_CODES.includes(name))).toEqual([]);
    expect(new Set(CHECK_CODES).size).toBe(CHECK_CODES.length);
  });

  const facts: RowFacts = { audience: 'https://as.example', resources: encodeResources(['https://mcp.example/a', 'https://mcp.example/b']), username: 'alice', explanation: 'allowed by rule r1: scopes a b, lifetime 300 s', scopes_granted: 'a b', jti: 'j1', exp: 1_800_000_000 };
  const issued: CheckRecord[] = [
    { name: 'client_authentication', status: 'passed', message: 'authenticated with client_secret_basic' },
    ...['request_syntax', 'confidential_client'].map((name): CheckRecord => ({ name, status: 'passed' })),
    { name: 'id_token.algorithm', status: 'passed', message: 'RS256' },
    { name: 'id_token.key', status: 'passed', message: 'kid-1' },
    { name: 'user', status: 'passed', message: 'alice' },
    { name: 'audience', status: 'passed', message: 'https://as.example' },
    { name: 'resource', status: 'passed', message: 'https://mcp.example/a https://mcp.example/b' },
    { name: 'policy', status: 'passed', message: 'allowed', explanation: facts.explanation },
    { name: 'scope', status: 'passed', message: 'a b' },
    { name: 'step_up', status: 'passed' },
    { name: 'issue', status: 'passed', message: issuedDescription('j1', 1_800_000_000) },
  ];

  test('what a passed check says that its row\'s columns say already is not stored again, and reads back from them', () => {
    const stored = encodeChecks(issued, facts);
    const code = (name: string) => CHECK_CODES.indexOf(name);
    // user, audience, resource, policy, scope, step_up and issue have consecutive codes: one range
    expect(JSON.parse(stored)).toEqual(['0-2', code('id_token.algorithm'), [code('id_token.key'), 'p', 'kid-1'], `${code('user')}-${code('issue')}`]);
    expect(decodeChecks(stored, facts)).toEqual(issued);
  });

  test('an interned message is stored as its number and read back through the values; unknown numbers and failed checks stay as they are', () => {
    const code = CHECK_CODES.indexOf('id_token.key');
    expect(internable(issued)).toEqual(['kid-1']);
    expect(internable([{ name: 'id_token.key', status: 'failed', message: 'no key kid-x' }, { name: 'id_token.key', status: 'passed' }])).toEqual([]);
    const stored = encodeChecks(issued, facts, new Map([['kid-1', 7]]));
    expect(JSON.parse(stored)).toContainEqual([code, 'p', 7]);
    expect(decodeChecks(stored, { ...facts, values: new Map([[7, 'kid-1']]) })).toEqual(issued);
    // a number the values do not have: the check reads without its message
    expect(decodeChecks(stored, { ...facts, values: new Map() }).find((c) => c.name === 'id_token.key')).toEqual({ name: 'id_token.key', status: 'passed' });
    // a message with no number given is stored whole
    expect(JSON.parse(encodeChecks(issued, facts, new Map([['kid-2', 8]])))).toContainEqual([code, 'p', 'kid-1']);
  });

  test('request_id and jti equal to the row id are stored empty and read back as it', () => {
    expect(encodeOwnId('01a2-x', '01a2-x')).toBe('');
    expect(encodeOwnId('client-trace', '01a2-x')).toBe('client-trace');
    expect(encodeOwnId(null, '01a2-x')).toBeNull();
    expect(withOwnIds({ id: 'r', request_id: '', jti: '' })).toEqual({ id: 'r', request_id: 'r', jti: 'r' });
    expect(withOwnIds({ id: 'r', request_id: 'q', jti: null })).toEqual({ id: 'r', request_id: 'q', jti: null });
    // the issue check reads its jti from the row as it reads
    const stored = encodeChecks(issued, facts);
    const row = { ...facts, id: 'j1', jti: '', rule_id: 'r1', explanation: '=300' };
    expect(decodeChecks(stored, rowFacts(row))).toEqual(issued);
    expect(decodeOwnId('', 'j1')).toBe('j1');
  });

  test('a check that says something else, or nothing, where the row would say it: stored as said', () => {
    const other: CheckRecord[] = [
      { name: 'client_authentication', status: 'passed', message: 'authenticated with private_key_jwt' },
      { name: 'client_authentication', status: 'passed' },
      { name: 'user', status: 'passed', message: 'bob' },
      { name: 'audience', status: 'passed', message: 'https://alias.example is an alias of https://as.example' },
      { name: 'resource', status: 'passed', message: 'https://mcp.example/a' },
      { name: 'policy', status: 'passed' },
      { name: 'scope', status: 'passed', message: '' },
      { name: 'issue', status: 'passed', message: 'preview, not signed' },
    ];
    expect(decodeChecks(encodeChecks(other, facts), facts)).toEqual(other);
    // and with a row that has none of those columns
    const empty: RowFacts = { audience: null, resources: null, username: null, explanation: 'e', scopes_granted: null, jti: null, exp: null };
    expect(decodeChecks(encodeChecks(issued, empty), empty)).toEqual(issued);
  });

  test('runs of three or more codes with one outcome are stored as a range, passed or not reached', () => {
    const names = CHECK_CODES.slice(0, 10);
    const checks: CheckRecord[] = [
      { name: names[0]!, status: 'passed', message: 'authenticated with client_secret_basic' },
      ...names.slice(1, 4).map((name): CheckRecord => ({ name, status: 'passed' })),
      { name: names[4]!, status: 'failed', message: 'no' },
      ...names.slice(5).map((name): CheckRecord => ({ name, status: 'not_reached' })),
      { name: '3-4', status: 'passed' },
      { name: CHECK_CODES[1]!, status: 'passed' }, { name: CHECK_CODES[2]!, status: 'passed' },
    ];
    const stored = encodeChecks(checks);
    expect(JSON.parse(stored)).toEqual(['0-3', [4, 'f', 'no'], '-5-9', ['3-4', 'p'], 1, 2]);
    expect(decodeChecks(stored)).toEqual(checks);
    expect(decodeChecks('["5-2", "0-9999", "-1-0"]')).toEqual([]);
  });

  test('an issued ID Token exchange\'s 25 checks take a fraction of the long form', () => {
    const names = ['client_authentication', 'request_syntax', 'confidential_client', 'grant_type_allowed', 'requested_token_type', 'subject_token_type',
      'subject_token_present', 'audience_present', 'actor_token', 'id_token.format', 'id_token.algorithm', 'id_token.key', 'id_token.signature',
      'id_token.issuer', 'id_token.audience', 'id_token.expiry', 'id_token.issued_at', 'id_token.subject', 'user', 'audience', 'resource', 'policy',
      'scope', 'step_up', 'issue'];
    const checks: CheckRecord[] = names.map((name) => ({ name, status: 'passed' }));
    expect(encodeChecks(checks).length).toBeLessThan(JSON.stringify(checks).length / 10);
  });
});

describe('warnings', () => {
  const warnings: WarningRecord[] = [
    { code: 'scope_omitted', message: 'no scope parameter', section: 'RFC 8693 §2.1' },
    { code: 'audience_alias', message: 'an alias', section: 'RFC 8414 §2' },
  ];

  test('round trip; none is stored as null', () => {
    expect(decodeWarnings(encodeWarnings(warnings))).toEqual(warnings);
    expect(encodeWarnings([])).toBeNull();
    expect(encodeWarnings(undefined)).toBeNull();
    expect(decodeWarnings(null)).toEqual([]);
  });

  test('a warning as defined is stored by code; one whose message varies, with its message; anything else whole', () => {
    const defined: WarningRecord = { code: 'scope_omitted', message: WARNINGS.scope_omitted!.message!, section: WARNINGS.scope_omitted!.section };
    const varying: WarningRecord = { code: 'scope_not_defined', message: 'requested scope x is not defined', section: WARNINGS.scope_not_defined!.section };
    const other: WarningRecord = { code: 'future_warning', message: 'm', section: 's' };
    const stored = encodeWarnings([defined, varying, other])!;
    expect(JSON.parse(stored)).toEqual([WARNING_CODES.indexOf('scope_omitted'), ['scope_not_defined', 'requested scope x is not defined'], ['future_warning', 'm', 's']]);
    expect(decodeWarnings(stored)).toEqual([defined, varying, other]);
    // rows written before numbers named a defined warning by its code
    expect(decodeWarnings('["scope_omitted"]')).toEqual([defined]);
  });

  test('every warning has a number; numbers are unique', () => {
    expect(Object.keys(WARNINGS).filter((code) => !WARNING_CODES.includes(code))).toEqual([]);
    expect(new Set(WARNING_CODES).size).toBe(WARNING_CODES.length);
  });

  test.each(['not json', '{"code":"x"}', '""', '[99, -1, 1.5, null, "x", {"message":"no code"}, ["audience_alias"]]'])('hostile stored value %j: no warning', (stored) => {
    expect(decodeWarnings(stored)).toEqual([]);
  });
});

describe('resources', () => {
  test('round trip; absent is null, none is an empty list', () => {
    expect(decodeResources(encodeResources([MCP, MCP_ADMIN]))).toEqual([MCP, MCP_ADMIN]);
    expect(encodeResources(undefined)).toBeNull();
    expect(decodeResources(encodeResources([]))).toEqual([]);
    expect(decodeResources(null)).toEqual([]);
  });

  test('each resource is bounded at MAX_TEXT', () => {
    const long = `https://mcp.example/${'a'.repeat(MAX_TEXT * 2)}`;
    const [stored, short] = decodeResources(encodeResources([long, MCP]));
    expect(stored).toBe(long.slice(0, MAX_TEXT));
    expect(short).toBe(MCP);
  });

  test.each(['not json', '{"0":"x"}', '[1, null, {}]'])('hostile stored value %j: only its strings, if any', (stored) => {
    expect(decodeResources(stored)).toEqual([]);
    expect(decodeResources(`["${MCP}", 1]`)).toEqual([MCP]);
  });

  test('the codec\'s indexed length is the one migration 0008 indexes (the admin filter\'s condition must match the partial index)', () => {
    expect(RESOURCES_INDEXED_MAX).toBe(AUDIT_RESOURCES_INDEXED);
  });
});

describe('explanations', () => {
  const row = (rule_id: string | null, scopes_granted: string | null) => ({ rule_id, scopes_granted });
  test('an issue explained as the policy words it is stored as its lifetime, and reads back whole', () => {
    const one = 'allowed by rule r1: scopes a b, lifetime 300 s';
    expect(encodeExplanation(one, row('r1', 'a b'))).toBe('=300');
    expect(decodeExplanation({ ...row('r1', 'a b'), explanation: '=300' })).toBe(one);
    const two = 'allowed by rules r1, r2: scopes a, lifetime 60 s';
    expect(encodeExplanation(two, row('r1,r2', 'a'))).toBe('=60');
    expect(decodeExplanation({ ...row('r1,r2', 'a'), explanation: '=60' })).toBe(two);
  });

  test('anything else is stored as written, a leading = doubled; each reads back as it came', () => {
    for (const [explanation, r] of [
      ['allowed by rule r1: scopes a b, lifetime 300 s', row('r2', 'a b')],
      ['allowed by rule r1: scopes a b, lifetime 300 s', row('r1', 'a')],
      ['allowed by rule r1: scopes a b, lifetime 300 s', row(null, null)],
      ['no rule lets client c reach MCP server m', row(null, null)],
      ['=300', row('r1', 'a b')],
      ['==x', row(null, null)],
      ['', row(null, null)],
    ] as const) {
      const stored = encodeExplanation(explanation, r);
      expect(stored === explanation || stored === `=${explanation}`).toBe(true);
      expect(decodeExplanation({ ...r, explanation: stored })).toBe(explanation);
    }
  });

  test('the policy\'s own explanation of an issue is the one stored short', () => {
    const decision = decide({
      client: { id: CLIENT_ID }, user: { sub: 'sub-alice', groups: [] }, resourceServer: { id: 'rs-todo' },
      mcpServers: [{ id: 'mcp-todo', resource: MCP, enabled: true, scopes: ['todos.read', 'todos.write'] }], requestedScopes: ['todos.read', 'todos.write'], now: NOW,
    }, [rule('r1'), rule('r2', { mcpServerId: 'mcp-todo', lifetime: 120 })]);
    expect(decision.allow).toBe(true);
    const allowed = decision as Extract<typeof decision, { allow: true }>;
    expect(encodeExplanation(allowed.explanation, { rule_id: encodeRuleIds(allowed.ruleIds), scopes_granted: allowed.scopes.join(' ') })).toBe(`=${allowed.lifetime}`);
  });
});

describe('token types', () => {
  test('the RFC 8693 namespace is stored short; anything else as sent; each reads back as it came', () => {
    const ns = 'urn:ietf:params:oauth:token-type:';
    for (const [type, stored] of [[`${ns}id_token`, '@id_token'], [`${ns}refresh_token`, '@refresh_token'], [`${ns}jwt`, '@jwt'],
      [`${ns}ID Token`, `${ns}ID Token`], ['urn:example:x', 'urn:example:x'], ['@id_token', '@@id_token'], ['@@x', '@@@x'], ['', '']] as const) {
      expect(encodeTokenType(type)).toBe(stored);
      expect(decodeTokenType(encodeTokenType(type))).toBe(type);
    }
    expect(encodeTokenType(undefined)).toBeNull();
    expect(decodeTokenType(null)).toBeNull();
    expect(encodeTokenType('x'.repeat(300))).toHaveLength(255);
  });
});

describe('rule ids and text', () => {
  test('rule ids round trip, comma-separated; none is null', () => {
    expect(encodeRuleIds(['r1', 'r2'])).toBe('r1,r2');
    expect(decodeRuleIds(encodeRuleIds(['r1', 'r2']))).toEqual(['r1', 'r2']);
    expect(decodeRuleIds(encodeRuleIds(['r1']))).toEqual(['r1']);
    expect(encodeRuleIds([])).toBeNull();
    expect(encodeRuleIds(undefined)).toBeNull();
    expect(decodeRuleIds(null)).toEqual([]);
    expect(decodeRuleIds('')).toEqual([]);
  });

  test('text is bounded, and absent stays absent', () => {
    expect(text('x'.repeat(MAX_TEXT + 1))).toHaveLength(MAX_TEXT);
    expect(text('abc', 2)).toBe('ab');
    expect(text(undefined)).toBeNull();
  });
});
