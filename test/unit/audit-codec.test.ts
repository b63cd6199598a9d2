/** The audit row's format: what the writer encodes, every reader decodes, and a hand-edited row cannot break. */
import { AUDIT_RESOURCES_INDEXED } from '../../migrations/0008_audit_resources_index.ts';
import {
  decodeChecks, decodeResources, decodeRuleIds, decodeWarnings, encodeChecks, encodeResources, encodeRuleIds, encodeWarnings,
  failedCheck, MAX_TEXT, RESOURCES_INDEXED_MAX, text, type CheckRecord, type WarningRecord,
} from '../../src/audit/codec.ts';
import { MCP, MCP_ADMIN } from './fixtures.ts';

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
      null, 'audience', 3,
      { name: 'issue', status: 'failed', message: 42, explanation: ['x'] },
    ]);
    // (a bare string is the compact form of a check that passed with nothing to say)
    expect(decodeChecks(stored)).toEqual([{ name: 'user', status: 'passed', message: 'alice' }, { name: 'audience', status: 'passed' }, { name: 'issue', status: 'failed' }]);
  });

  test('the compact form: bare names, -name for not reached, tuples; hostile tuples dropped', () => {
    const checks: CheckRecord[] = [
      { name: 'client_authentication', status: 'passed', message: 'authenticated with client_secret_basic' },
      { name: 'request_syntax', status: 'passed' },
      { name: 'policy', status: 'failed', message: 'this user may not use client x', explanation: 'rule r1 names group g' },
      { name: 'scope', status: 'not_reached' },
      { name: 'step_up', status: 'passed', explanation: 'only an explanation' },
    ];
    const stored = encodeChecks(checks);
    expect(JSON.parse(stored)).toEqual([
      ['client_authentication', 'p', 'authenticated with client_secret_basic'], 'request_syntax',
      ['policy', 'f', 'this user may not use client x', 'rule r1 names group g'], '-scope', ['step_up', 'p', null, 'only an explanation'],
    ]);
    expect(decodeChecks(stored)).toEqual(checks);
    expect(decodeChecks(JSON.stringify([['x', 'z'], [7, 'p'], ['y'], ['ok', 'f', 3, 4]]))).toEqual([{ name: 'ok', status: 'failed' }]);
  });

  test('an issued ID Token exchange\'s 25 checks take well under half the long form', () => {
    const names = ['client_authentication', 'request_syntax', 'confidential_client', 'grant_type_allowed', 'requested_token_type', 'subject_token_type',
      'subject_token_present', 'audience_present', 'actor_token', 'id_token.format', 'id_token.algorithm', 'id_token.key', 'id_token.signature',
      'id_token.issuer', 'id_token.audience', 'id_token.expiry', 'id_token.issued_at', 'id_token.subject', 'user', 'audience', 'resource', 'policy',
      'scope', 'step_up', 'issue'];
    const checks: CheckRecord[] = names.map((name) => ({ name, status: 'passed' }));
    expect(encodeChecks(checks).length).toBeLessThan(JSON.stringify(checks).length / 2);
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

  test.each(['not json', '{"code":"x"}', '""', '[1, null, "x", {"message":"no code"}]'])('hostile stored value %j: no warning', (stored) => {
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
