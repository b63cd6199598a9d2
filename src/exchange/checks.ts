/**
 * The token exchange as a list of named checks, in the order the draft's processing rules take them. Each check ends passed, failed or not
 * reached; the first failure carries the OAuth error. The audit row, the error_description and every later
 * view of a decision read this one list.
 */

import type { CheckRecord, CheckStatus } from '../audit/codec.ts';

export type { CheckRecord, CheckStatus } from '../audit/codec.ts';

export interface CheckDef {
  name: string;
  /** where the rule comes from: the draft, RFC or specification section behind it */
  section: string;
  /** the OAuth error a failure of this check answers with */
  error: ExchangeErrorCode;
}

export interface CheckResult extends CheckDef {
  status: CheckStatus;
  /** what the client may read (its own diagnostics view shows it) */
  message?: string;
  /** what only the admin may read, when it says more than `message` (rule ids, groups) */
  explanation?: string;
}

export type ExchangeErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'unauthorized_client'
  | 'invalid_grant'
  | 'invalid_target'
  | 'invalid_scope'
  | 'insufficient_user_authentication'
  | 'invalid_authorization_details'
  | 'invalid_dpop_proof'
  | 'use_dpop_nonce'
  | 'temporarily_unavailable';

const D = 'draft-ietf-oauth-identity-assertion-authz-grant';
const def = (name: string, section: string, error: ExchangeErrorCode): CheckDef => ({ name, section, error });

export const REQUEST_CHECKS: CheckDef[] = [
  def('client_authentication', `RFC 6749 §2.3, §5.2`, 'invalid_client'),
  def('request_syntax', 'RFC 6749 §3.2, §5.2 (no repeated parameters, valid scope syntax)', 'invalid_request'),
  def('confidential_client', `${D} §9.1`, 'unauthorized_client'),
  def('grant_type_allowed', 'RFC 6749 §5.2', 'unauthorized_client'),
  def('requested_token_type', `${D} §4.3`, 'invalid_request'),
  def('subject_token_type', `${D} §4.3, RFC 8693 §2.1`, 'invalid_request'),
  def('subject_token_present', 'RFC 8693 §2.1', 'invalid_request'),
  def('audience_present', `${D} §4.3`, 'invalid_request'),
  def('actor_token', 'RFC 8693 §2.1 (actor_token_type is required with actor_token, and only with it)', 'invalid_request'),
];

/**
 * The checks of a request that carries `authorization_details` (planned only then): its form, once the
 * request's own parameters passed, and the types the deciding rules grant, once policy allowed the request.
 */
export const DETAILS_FORMAT_CHECK: CheckDef = def('authorization_details.format', `RFC 9396 §2, §5; ${D} §4.3.3`, 'invalid_authorization_details');
export const DETAILS_TYPES_CHECK: CheckDef = def('authorization_details.types', `RFC 9396 §5, §7; ${D} §4.3.3 (the IdP may grant fewer)`, 'invalid_authorization_details');

export const ID_TOKEN_CHECKS: CheckDef[] = [
  def('id_token.format', 'RFC 7519 §7.2', 'invalid_grant'),
  def('id_token.algorithm', 'RFC 8725 §3.1', 'invalid_grant'),
  def('id_token.key', 'OIDC Core §10.1', 'invalid_grant'),
  def('id_token.signature', 'OIDC Core §3.1.3.7', 'invalid_grant'),
  def('id_token.issuer', 'OIDC Core §3.1.3.7 (2)', 'invalid_grant'),
  def('id_token.audience', `${D} §4.3.3, OIDC Core §3.1.3.7 (3-5)`, 'invalid_grant'),
  def('id_token.expiry', 'OIDC Core §3.1.3.7 (9)', 'invalid_grant'),
  def('id_token.issued_at', 'OIDC Core §3.1.3.7 (10)', 'invalid_grant'),
  def('id_token.subject', 'OIDC Core §2', 'invalid_grant'),
];

/**
 * The request's DPoP proof (RFC 9449; draft §9.8.1): planned only when the request carries one or the client
 * is registered to always send one, so the checks of an exchange without DPoP are what they always were.
 */
export const DPOP_CHECKS: CheckDef[] = [
  def('dpop_proof', `RFC 9449 §4.3, §5, §8, §11.1; ${D} §9.8.1`, 'invalid_dpop_proof'),
];

/**
 * One check for a refresh token, whatever is wrong with it (unknown, another client's, expired, revoked,
 * already rotated): the presenting client must not learn that a stolen token is live for someone else, so it
 * is told the same thing in every case, and only the admin's explanation says which.
 */
export const REFRESH_TOKEN_CHECKS: CheckDef[] = [
  def('refresh_token', 'RFC 6749 §6, RFC 9700 §4.14.2', 'invalid_grant'),
];

/** Checks of earlier versions, still named by older audit rows. */
const RETIRED_CHECKS: CheckDef[] = [
  // refused actor_token and authorization_details, before idjag accepted them
  def('unsupported_parameters', `${D} §4.3, RFC 8693 §2.1, RFC 9396`, 'invalid_request'),
  def('refresh_token.found', 'RFC 6749 §6', 'invalid_grant'),
  def('refresh_token.client', 'RFC 6749 §6', 'invalid_grant'),
  def('refresh_token.live', 'RFC 6749 §6, RFC 7009', 'invalid_grant'),
];

export const DECISION_CHECKS: CheckDef[] = [
  def('user', 'RFC 8693 §2.2.2 (invalid_grant); the subject token\'s user still exists and is enabled', 'invalid_grant'),
  def('audience', `${D} §4.3, RFC 8693 §2.2.2`, 'invalid_target'),
  def('resource', 'RFC 8707 §2, RFC 9728 §2; MCP Enterprise-Managed Authorization', 'invalid_target'),
  def('policy', `admin policy, default deny; RFC 8693 §2.2.2, ${D} §9.4`, 'invalid_target'),
  def('scope', 'RFC 6749 §3.3, §5.2', 'invalid_scope'),
  def('step_up', 'RFC 9470 §3', 'insufficient_user_authentication'),
  def('issue', `${D} §3`, 'temporarily_unavailable'),
];

/** The decision's checks for this request: with `authorization_details`, their types are decided before issuing. */
export function decisionChecks(withDetails: boolean): CheckDef[] {
  return withDetails ? [...DECISION_CHECKS.slice(0, -1), DETAILS_TYPES_CHECK, DECISION_CHECKS.at(-1)!] : DECISION_CHECKS;
}

/**
 * The token endpoint's rate limit (src/throttle/index.ts): not a check of the exchange itself, but a refusal
 * after client authentication and before the grant, recorded (reason `rate_limit`) like the others.
 */
export const RATE_LIMIT_CHECK: CheckDef = def('rate_limit', 'RFC 6585 §4 (429 Too Many Requests); RFC 9110 §10.2.3 (Retry-After)', 'temporarily_unavailable');

/** Every check by name: the audit row stores names and outcomes only, and readers look the rest up here. */
export const CHECKS_BY_NAME: ReadonlyMap<string, CheckDef> = new Map(
  [...REQUEST_CHECKS, ...DPOP_CHECKS, DETAILS_FORMAT_CHECK, ...ID_TOKEN_CHECKS, ...REFRESH_TOKEN_CHECKS, ...DECISION_CHECKS, DETAILS_TYPES_CHECK, RATE_LIMIT_CHECK, ...RETIRED_CHECKS].map((d) => [d.name, d]),
);

/** Stored checks with what follows from their names: the section behind each and the error its failure answers. */
export function describeChecks(records: readonly CheckRecord[]): (CheckRecord & Partial<Pick<CheckDef, 'section' | 'error'>>)[] {
  return records.map((c) => {
    const def = CHECKS_BY_NAME.get(c.name);
    return { ...c, ...(def ? { section: def.section, error: def.error } : {}) };
  });
}

/** How much an error_description says: everything that helps fix the request, or a terse line for production. */
export type ErrorDetail = 'verbose' | 'minimal';

const MINIMAL: Record<ExchangeErrorCode, string> = {
  invalid_request: 'the request is malformed',
  invalid_client: 'client authentication failed',
  unauthorized_client: 'this client may not use token exchange for ID-JAGs',
  invalid_grant: 'the subject token is not valid',
  invalid_target: 'the requested audience or resource is not available to this client',
  invalid_scope: 'none of the requested scopes may be granted',
  insufficient_user_authentication: 'the user must sign in again',
  invalid_authorization_details: 'the authorization_details are malformed or may not be granted',
  invalid_dpop_proof: 'the DPoP proof is not valid',
  use_dpop_nonce: 'the DPoP proof must carry the nonce from the DPoP-Nonce header',
  temporarily_unavailable: 'the IdP could not decide; retry shortly',
};

/**
 * The error_description: verbose names what was wrong, the failed check and the spec sections behind it;
 * minimal says only which kind of thing was wrong and the check's name. Neither discloses policy: the
 * descriptions handed in here were written for the client (draft §9.4).
 */
export function describeFailure(detail: ErrorDetail, error: ExchangeErrorCode, check: string, description: string): string {
  const def = CHECKS_BY_NAME.get(check);
  return detail === 'minimal'
    ? `${MINIMAL[error]} (failed check: ${check})`
    : `${description} (failed check: ${check}${def ? `; ${def.section}` : ''})`;
}

export interface RejectionOptions {
  explanation?: string;
  reason?: string;
  error?: ExchangeErrorCode;
  ruleIds?: string[];
  maxAge?: number;
}

/** A failed check, thrown out of the steps and caught once, by the pipeline. */
export class ExchangeRejection extends Error {
  readonly check: string;
  readonly error: ExchangeErrorCode;
  /** what the client is told */
  readonly description: string;
  /** what the audit log is told (may name policy) */
  readonly explanation: string;
  readonly reason: string;
  /** the rules a policy denial names (for the audit row) */
  readonly ruleIds: string[];
  readonly maxAge?: number;

  constructor(check: CheckDef, description: string, opts: RejectionOptions = {}) {
    super(description);
    this.check = check.name;
    this.error = opts.error ?? check.error;
    this.description = description;
    this.explanation = opts.explanation ?? description;
    this.reason = opts.reason ?? check.name;
    this.ruleIds = opts.ruleIds ?? [];
    if (opts.maxAge !== undefined) this.maxAge = opts.maxAge;
  }
}

export class CheckList {
  readonly #results: CheckResult[] = [];

  constructor(defs: CheckDef[] = []) {
    this.plan(defs);
  }

  /** Adds checks that will run (once the subject token's type says which). */
  plan(defs: CheckDef[]): void {
    for (const d of defs) this.#results.push({ ...d, status: 'not_reached' });
  }

  pass(name: string, message?: string, explanation?: string): void {
    const r = this.#get(name);
    r.status = 'passed';
    if (message !== undefined) r.message = message;
    if (explanation !== undefined && explanation !== message) r.explanation = explanation;
  }

  /** Marks the check failed; returns the rejection it makes (for a refusal already answered elsewhere). */
  failed(name: string, description: string, opts: RejectionOptions = {}): ExchangeRejection {
    const r = this.#get(name);
    r.status = 'failed';
    r.message = description;
    if (opts.explanation !== undefined && opts.explanation !== description) r.explanation = opts.explanation;
    return new ExchangeRejection(r, description, opts);
  }

  /** Marks the check failed and throws the rejection: the pipeline's steps stop here. */
  fail(name: string, description: string, opts: RejectionOptions = {}): never {
    throw this.failed(name, description, opts);
  }

  /** Runs a predicate as a check: passes it, or fails it with the description. */
  require(name: string, ok: boolean, description: string, opts?: RejectionOptions): void {
    if (ok) this.pass(name);
    else this.fail(name, description, opts);
  }

  def(name: string): CheckDef {
    return this.#get(name);
  }

  get results(): readonly CheckResult[] {
    return this.#results;
  }

  /** The compact form written to the audit log (the section and error code follow from the name). */
  get record(): CheckRecord[] {
    return this.#results.map(({ name, status, message, explanation }) => ({
      name, status, ...(message === undefined ? {} : { message }), ...(explanation === undefined ? {} : { explanation }),
    }));
  }

  #get(name: string): CheckResult {
    const r = this.#results.find((c) => c.name === name);
    if (!r) throw new Error(`check ${name} is not planned`);
    return r;
  }
}
