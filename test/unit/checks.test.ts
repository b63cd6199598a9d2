/** The check list every exchange decision is recorded in, and what follows from a check's name. */
import {
  CHECKS_BY_NAME, CheckList, DECISION_CHECKS, decisionChecks, describeChecks, describeFailure, DETAILS_FORMAT_CHECK, DETAILS_TYPES_CHECK, DPOP_CHECKS,
  ExchangeRejection, ID_TOKEN_CHECKS, RATE_LIMIT_CHECK, REFRESH_TOKEN_CHECKS, REQUEST_CHECKS, type CheckDef,
} from '../../src/exchange/checks.ts';
import { statuses, thrownBy } from './fixtures.ts';

const def = (name: string): CheckDef => CHECKS_BY_NAME.get(name)!;

describe('CheckList', () => {
  test('plans checks as not reached, in order, and plans more later', () => {
    const checks = new CheckList(REQUEST_CHECKS);
    expect(checks.results.map((c) => c.name)).toEqual(REQUEST_CHECKS.map((d) => d.name));
    expect(new Set(checks.results.map((c) => c.status))).toEqual(new Set(['not_reached']));
    checks.plan(DECISION_CHECKS);
    expect(checks.results).toHaveLength(REQUEST_CHECKS.length + DECISION_CHECKS.length);
    expect(checks.results.at(-1)).toMatchObject({ name: 'issue', status: 'not_reached', error: 'temporarily_unavailable' });
  });

  test('pass records the message, and the explanation only when it says something else', () => {
    const checks = new CheckList(DECISION_CHECKS);
    checks.pass('user', 'alice');
    checks.pass('audience', 'same', 'same');
    checks.pass('policy', 'allowed', 'allowed by rule r1');
    checks.pass('scope');
    const byName = Object.fromEntries(checks.results.map((c) => [c.name, c]));
    expect(byName.user).toMatchObject({ status: 'passed', message: 'alice' });
    expect(byName.user).not.toHaveProperty('explanation');
    expect(byName.audience).not.toHaveProperty('explanation');
    expect(byName.policy).toMatchObject({ message: 'allowed', explanation: 'allowed by rule r1' });
    expect(byName.scope).toMatchObject({ status: 'passed' });
    expect(byName.scope).not.toHaveProperty('message');
  });

  test('an unplanned check can be neither passed nor failed', () => {
    const checks = new CheckList(REQUEST_CHECKS);
    expect(() => checks.pass('user')).toThrow('check user is not planned');
    expect(() => checks.failed('id_token.format', 'x')).toThrow('check id_token.format is not planned');
    expect(() => checks.def('nope')).toThrow('check nope is not planned');
  });

  test('failed marks the check and returns its rejection without throwing; fail throws it', () => {
    const checks = new CheckList(DECISION_CHECKS);
    const rejection = checks.failed('user', 'the user is disabled', { explanation: 'user alice is disabled', reason: 'user_disabled' });
    expect(rejection).toBeInstanceOf(ExchangeRejection);
    expect(rejection).toMatchObject({ check: 'user', error: 'invalid_grant', reason: 'user_disabled', description: 'the user is disabled' });
    expect(checks.results[0]).toMatchObject({ status: 'failed', message: 'the user is disabled', explanation: 'user alice is disabled' });

    const thrown = thrownBy(() => checks.fail('audience', 'unknown audience'));
    expect(thrown).toBeInstanceOf(ExchangeRejection);
    expect(thrown).toMatchObject({ check: 'audience', error: 'invalid_target', reason: 'audience', message: 'unknown audience' });
    expect(statuses(checks).audience).toBe('failed');
  });

  test('require passes a true predicate and fails a false one with the description', () => {
    const checks = new CheckList(REQUEST_CHECKS);
    checks.require('confidential_client', true, 'public');
    expect(thrownBy(() => checks.require('grant_type_allowed', false, 'not registered', { reason: 'grant' })))
      .toMatchObject({ check: 'grant_type_allowed', reason: 'grant', error: 'unauthorized_client', description: 'not registered' });
    expect(statuses(checks)).toMatchObject({ confidential_client: 'passed', grant_type_allowed: 'failed' });
  });

  test('checks planned after a failure stay not_reached', () => {
    const checks = new CheckList(REQUEST_CHECKS);
    checks.pass('client_authentication');
    expect(() => checks.fail('request_syntax', 'scope repeated')).toThrow(ExchangeRejection);
    checks.plan(DECISION_CHECKS);
    const after = checks.results.slice(2);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((c) => c.status === 'not_reached' && c.message === undefined)).toBe(true);
  });

  test('record keeps name, status and messages, never section or error, and explanation only when it differs', () => {
    const checks = new CheckList(DECISION_CHECKS.slice(0, 3));
    checks.pass('user', 'alice', 'alice');
    checks.failed('audience', 'unknown audience', { explanation: 'unknown audience' });
    expect(checks.record).toEqual([
      { name: 'user', status: 'passed', message: 'alice' },
      { name: 'audience', status: 'failed', message: 'unknown audience' },
      { name: 'resource', status: 'not_reached' },
    ]);
    const other = new CheckList(DECISION_CHECKS.slice(0, 1));
    other.failed('user', 'disabled', { explanation: 'user alice (sub-alice) is disabled' });
    expect(other.record).toEqual([{ name: 'user', status: 'failed', message: 'disabled', explanation: 'user alice (sub-alice) is disabled' }]);
  });

  test('def returns the planned definition', () => {
    expect(new CheckList(ID_TOKEN_CHECKS).def('id_token.key')).toMatchObject({ name: 'id_token.key', error: 'invalid_grant', section: def('id_token.key').section });
  });
});

describe('CHECKS_BY_NAME', () => {
  test('knows every check once, the retired ones too', () => {
    const all = [...REQUEST_CHECKS, ...DPOP_CHECKS, DETAILS_FORMAT_CHECK, ...ID_TOKEN_CHECKS, ...REFRESH_TOKEN_CHECKS, ...DECISION_CHECKS, DETAILS_TYPES_CHECK, RATE_LIMIT_CHECK];
    expect(new Set(all.map((d) => d.name)).size).toBe(all.length);
    for (const d of all) expect(CHECKS_BY_NAME.get(d.name)).toBe(d);
    expect(CHECKS_BY_NAME.get('refresh_token.found')).toMatchObject({ error: 'invalid_grant' });
    expect(CHECKS_BY_NAME.get('unsupported_parameters')).toMatchObject({ error: 'invalid_request' });
    expect(CHECKS_BY_NAME.size).toBe(all.length + 4);
  });
});

describe('decisionChecks', () => {
  test('without authorization_details, the decision checks as they are; with them, their types are decided before issue', () => {
    expect(decisionChecks(false)).toBe(DECISION_CHECKS);
    expect(decisionChecks(true).map((d) => d.name)).toEqual([...DECISION_CHECKS.slice(0, -1).map((d) => d.name), 'authorization_details.types', 'issue']);
    expect(DETAILS_TYPES_CHECK.error).toBe('invalid_authorization_details');
    expect(DETAILS_FORMAT_CHECK).toMatchObject({ error: 'invalid_authorization_details', section: expect.stringContaining('RFC 9396 §2') });
  });
});

describe('describeFailure', () => {
  test('verbose: the description, the failed check and its section', () => {
    expect(describeFailure('verbose', 'invalid_target', 'audience', 'audience https://x is not known'))
      .toBe(`audience https://x is not known (failed check: audience; ${def('audience').section})`);
  });

  test('verbose, for a check it does not know: no section', () => {
    expect(describeFailure('verbose', 'invalid_request', 'made_up', 'bad')).toBe('bad (failed check: made_up)');
  });

  test('minimal: only the kind of error and the check, never the description', () => {
    const minimal = describeFailure('minimal', 'invalid_scope', 'scope', 'none of the requested scopes (admin) may be granted');
    expect(minimal).toBe('none of the requested scopes may be granted (failed check: scope)');
    expect(minimal).not.toContain('admin');
    expect(describeFailure('minimal', 'invalid_client', 'client_authentication', 'client agent is disabled'))
      .toBe('client authentication failed (failed check: client_authentication)');
  });
});

describe('describeChecks', () => {
  test('adds section and error to known names, nothing to unknown ones, and keeps the stored fields', () => {
    const described = describeChecks([
      { name: 'scope', status: 'failed', message: 'no scope', explanation: 'rule r1' },
      { name: 'refresh_token.live', status: 'passed' },
      { name: 'from_the_future', status: 'not_reached' },
    ]);
    expect(described[0]).toEqual({ name: 'scope', status: 'failed', message: 'no scope', explanation: 'rule r1', section: def('scope').section, error: 'invalid_scope' });
    expect(described[1]).toEqual({ name: 'refresh_token.live', status: 'passed', section: def('refresh_token.live').section, error: 'invalid_grant' });
    expect(described[2]).toEqual({ name: 'from_the_future', status: 'not_reached' });
  });
});

describe('ExchangeRejection', () => {
  test('defaults: reason is the check name, error the check\'s, no rule ids, explanation the description', () => {
    const r = new ExchangeRejection(def('resource'), 'resource x is not known');
    expect(r).toBeInstanceOf(Error);
    expect(r).toMatchObject({ check: 'resource', reason: 'resource', error: 'invalid_target', ruleIds: [], description: 'resource x is not known', explanation: 'resource x is not known', message: 'resource x is not known' });
    expect(r.maxAge).toBeUndefined();
  });

  test('options override each default', () => {
    const r = new ExchangeRejection(def('step_up'), 'sign in again', { explanation: 'rule r1: 60 s', reason: 'step_up_required', error: 'invalid_grant', ruleIds: ['r1'], maxAge: 60 });
    expect(r).toMatchObject({ check: 'step_up', reason: 'step_up_required', error: 'invalid_grant', ruleIds: ['r1'], maxAge: 60, explanation: 'rule r1: 60 s' });
  });
});
