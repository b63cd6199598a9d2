import type { DecisionRecord } from '../audit/index.ts';
import type { Member } from '../db/users.ts';
import { decide, type Allow, type Deny, type Rule } from '../policy/index.ts';
import { CheckList, decisionChecks, DETAILS_TYPES_CHECK, DPOP_CHECKS, ExchangeRejection, REQUEST_CHECKS } from './checks.ts';
import { detailTypes, type AuthorizationDetail } from './details.ts';
import { lintClaims, lintRequest, lintTarget, type Warning } from './lint.ts';
import { idJagClaims, type IdJagClaims, type Minted, type Minter } from './mint.ts';
import { NO_PROOF, type ProofSource } from './proof.ts';
import { parseRequest, type ExchangeInput, type ExchangeRequest, type RequestingClient } from './request.ts';
import type { Subject, SubjectSource } from './subject.ts';
import { lookedUp, resolveTarget, type Catalog, type Target } from './target.ts';
import type { ExchangeLookup, ExchangeQuery, TargetLookup } from '../db/catalog.ts';

/**
 * The token exchange, once: request → subject → target → policy → mint, each step a named check. The
 * provider's grant, the recorder of refusals before the grant and the admin's simulator are adapters around
 * this one function, so what an admin simulates is by construction what a client gets. It decides and
 * reports; it writes nothing (the adapters record the outcome) and answers no one.
 */

/**
 * Who the users are now: as the database has them when the request arrives (the grant's lookup cache drops
 * whatever changed, src/exchange/lookup-cache.ts), so a disabled user stops at once.
 */
export interface Directory {
  /** the user and their groups (one read) */
  member(sub: string): Promise<Member | undefined>;
}

export interface RuleSource {
  /** the candidate rules of this client for this Resource AS, disabled ones too */
  rulesFor(clientId: string, resourceServerId: string): Promise<Rule[]>;
}

/** The steps, for whoever measures them (src/metrics). */
export const EXCHANGE_STAGES = ['request', 'subject', 'target', 'policy', 'mint'] as const;
export type ExchangeStage = (typeof EXCHANGE_STAGES)[number];

export interface ExchangePorts {
  subjects: SubjectSource;
  directory: Directory;
  catalog: Catalog;
  rules: RuleSource;
  minter: Minter;
  /**
   * Everything the exchange reads once it knows who the user is (the member, the target, the client's rules
   * there, the user's aud_sub), at once: where each read is a round trip (PostgreSQL). The same answers as
   * `directory`, `catalog` and `rules`, which serve when it is absent.
   */
  lookup?(q: ExchangeQuery): Promise<ExchangeLookup>;
  /** the request's DPoP proof; absent: the request carries none */
  proofs?: ProofSource | undefined;
  issuer: string;
  /** this IdP's tenant (configuration): the ID-JAG `tenant`, when set */
  tenant?: string | undefined;
  /** epoch seconds */
  clock: () => number;
  /** told when each stage begins (the previous one then ended) and when the pipeline ends */
  stage?: (name: ExchangeStage | 'end') => void;
}

export type Outcome =
  | { kind: 'issued'; request: ExchangeRequest; subject: Subject; target: Target; decision: Allow; claims: IdJagClaims; minted: Minted }
  | { kind: 'denied'; rejection: ExchangeRejection }
  /** a port failed (the database, the signer): nothing was decided, nothing may be issued */
  | { kind: 'failed'; error: unknown };

/** What the audit row says beyond the request's own facts: the decision and what it found on the way. */
export type DecisionFields = Pick<DecisionRecord, 'decision' | 'reason' | 'explanation' | 'error' | 'sub' | 'username' | 'scopesGranted' | 'ruleIds' | 'jti' | 'exp' | 'checks' | 'warnings' | 'detailsRequested' | 'detailsGranted'>;

export interface ExchangeResult {
  checks: CheckList;
  outcome: Outcome;
  record: DecisionFields;
}

/** Which check a policy denial fails, and the checks the engine got past before it. */
function denialCheck(d: Deny): { check: string; passed: string[] } {
  switch (d.reason) {
    case 'scope_not_allowed':
    case 'no_scope_requested': return { check: 'scope', passed: ['policy'] };
    case 'step_up_required': return { check: 'step_up', passed: ['policy', 'scope'] };
    default: return { check: 'policy', passed: [] };
  }
}

/** The user check: the subject token's user still exists and is enabled (and, with `ports.lookup`, the target read with it). */
async function subjectOf(ports: ExchangePorts, checks: CheckList, req: ExchangeRequest, now: number, record: Partial<DecisionFields>): Promise<{ subject: Subject; found?: TargetLookup }> {
  const identified = await ports.subjects.identify(req, checks, now);
  // recorded before the user check, so a refusal of an unknown or disabled user is found by the admin's user filter
  record.sub = identified.sub;
  const read = await ports.lookup?.({ sub: identified.sub, audience: req.audience, resources: req.resources, clientId: req.clientId });
  const member = read ? read.member : await ports.directory.member(identified.sub);
  if (!member) checks.fail('user', 'the subject token\'s user no longer exists', { explanation: `user ${identified.sub} does not exist`, reason: 'user_unknown' });
  const { user, groups } = member;
  if (user.disabled) checks.fail('user', 'the subject token\'s user is disabled', { explanation: `user ${user.username} (${user.sub}) is disabled`, reason: 'user_disabled' });
  checks.pass('user', user.username);
  return { subject: { user, groups, ...identified.auth }, ...(read ? { found: read } : {}) };
}

/**
 * The dpop_proof check (RFC 9449, draft §9.8.1): a proof, when the request carries one, must be valid, and the
 * ID-JAG is then bound to its key; a client registered with `dpop_bound_access_tokens` must send one (§5.2).
 * The key's thumbprint, or undefined for an unbound ID-JAG.
 */
async function possessionOf(proofs: ProofSource, checks: CheckList, client: RequestingClient, now: number): Promise<string | undefined> {
  if (!proofs.presented) {
    if (client.dpopBound) {
      checks.fail('dpop_proof', `client ${client.id} is registered with dpop_bound_access_tokens, so its token requests must carry a DPoP proof (RFC 9449 §5.2)`);
    }
    return undefined;
  }
  const { jkt } = await proofs.verify(checks, now);
  checks.pass('dpop_proof', `the ID-JAG is bound to the proof's key: cnf.jkt ${jkt} (RFC 7638 thumbprint)`);
  return jkt;
}

/** The policy check: the engine's decision, filed under the check it concerns. */
function policyDecision(checks: CheckList, req: ExchangeRequest, subject: Subject, target: Target, rules: Rule[], now: number): Allow {
  const decision = decide({
    client: { id: req.clientId },
    user: { sub: subject.user.sub, groups: subject.groups },
    resourceServer: target.resourceServer,
    mcpServers: target.mcpServers,
    ...(req.scopes ? { requestedScopes: req.scopes } : {}),
    ...(subject.authTime !== undefined ? { authTime: subject.authTime } : {}),
    now,
  }, rules);
  if (!decision.allow) {
    const { check, passed } = denialCheck(decision);
    for (const name of passed) checks.pass(name);
    checks.fail(check, decision.description, {
      explanation: decision.explanation, reason: decision.reason, error: decision.error, ruleIds: decision.ruleIds,
      ...(decision.maxAge !== undefined ? { maxAge: decision.maxAge } : {}),
    });
  }
  checks.pass('policy', 'allowed', decision.explanation);
  checks.pass('scope', decision.scopes.join(' '));
  checks.pass('step_up');
  return decision;
}

/** The types the deciding rules (one per MCP server) all allow: several resources share one ID-JAG, as with scopes. */
function allowedDetailTypes(rules: Rule[], decision: Allow): string[] {
  const deciding = decision.ruleIds.map((id) => rules.find((r) => r.id === id)?.authorizationDetailsTypes ?? []);
  return deciding.slice(1).reduce((acc, types) => acc.filter((t) => types.includes(t)), deciding[0] ?? []);
}

/**
 * The authorization_details check (draft §4.3.3: the IdP processes each object and may grant fewer): each
 * object whose type the deciding rules allow is granted whole, the others are dropped, like scopes; none
 * granted is invalid_authorization_details (RFC 9396 §5). The client is told which types, not which rules.
 */
function grantedDetails(checks: CheckList, requested: AuthorizationDetail[], rules: Rule[], decision: Allow): AuthorizationDetail[] {
  const allowed = allowedDetailTypes(rules, decision);
  const granted = requested.filter((d) => allowed.includes(d.type));
  const asked = detailTypes(requested);
  if (granted.length === 0) {
    checks.fail(DETAILS_TYPES_CHECK.name, `none of the requested authorization_details types (${asked.join(', ')}) may be granted for this target`, {
      explanation: `rule${decision.ruleIds.length > 1 ? 's' : ''} ${decision.ruleIds.join(', ')} allow${decision.ruleIds.length > 1 ? '' : 's'} ${allowed.length ? `the types ${allowed.join(', ')}` : 'no authorization_details type'}; requested: ${asked.join(', ')}`,
      ruleIds: decision.ruleIds,
    });
  }
  const dropped = asked.filter((t) => !allowed.includes(t));
  checks.pass(DETAILS_TYPES_CHECK.name, `granted ${detailTypes(granted).join(', ')}${dropped.length ? `; not granted: ${dropped.join(', ')}` : ''}`);
  return granted;
}

export async function runExchange(input: ExchangeInput, ports: ExchangePorts): Promise<ExchangeResult> {
  const checks = new CheckList(REQUEST_CHECKS);
  const now = ports.clock();
  const record: Partial<DecisionFields> = {};
  let warnings: Warning[] = [];
  const stage = ports.stage ?? (() => {});
  try {
    stage('request');
    const req = parseRequest(input, checks);
    warnings = lintRequest(input, req);
    if (req.authorizationDetails) record.detailsRequested = detailTypes(req.authorizationDetails);
    const proofs = ports.proofs ?? NO_PROOF;
    if (proofs.presented || input.client.dpopBound) checks.plan(DPOP_CHECKS);
    checks.plan(ports.subjects.checks(req.subjectTokenType));
    checks.plan(decisionChecks(req.authorizationDetails !== undefined));
    const jkt = await possessionOf(proofs, checks, input.client, now);

    stage('subject');
    const { subject, found } = await subjectOf(ports, checks, req, now, record);
    record.username = subject.user.username;

    stage('target');
    const catalog = found ? lookedUp(found) : ports.catalog;
    const target = await resolveTarget(catalog, checks, req.audience, req.resources);
    warnings = [...warnings, ...lintTarget(req, target)];
    const rules = found ? found.rules : await ports.rules.rulesFor(req.clientId, target.resourceServer.id);

    stage('policy');
    const decision = policyDecision(checks, req, subject, target, rules, now);
    const details = req.authorizationDetails && grantedDetails(checks, req.authorizationDetails, rules, decision);
    if (details) record.detailsGranted = detailTypes(details);

    stage('mint');
    const audSub = await catalog.audienceSubject(target.resourceServer.id, subject.user.sub);
    const claims = idJagClaims({
      issuer: ports.issuer, tenant: ports.tenant, subject, resourceServer: target.resourceServer, audSub,
      resources: req.resources, decision, authorizationDetails: details, jkt,
    });
    warnings = [...warnings, ...lintClaims(claims)];
    const minted = await ports.minter.mint(claims, decision.lifetime, now);
    checks.pass('issue', ports.minter.describe(minted));
    return {
      checks,
      outcome: { kind: 'issued', request: req, subject, target, decision, claims, minted },
      record: {
        ...record, decision: 'issued', reason: 'issued', explanation: decision.explanation,
        scopesGranted: decision.scopes, ruleIds: decision.ruleIds, jti: minted.jti, exp: minted.exp, checks: checks.record, warnings,
      },
    };
  } catch (err) {
    if (!(err instanceof ExchangeRejection)) {
      return {
        checks,
        outcome: { kind: 'failed', error: err },
        record: {
          ...record, decision: 'error', reason: 'internal_error', error: 'temporarily_unavailable',
          explanation: `the exchange failed: ${err instanceof Error ? err.message : String(err)}`, checks: checks.record, warnings,
        },
      };
    }
    return {
      checks,
      outcome: { kind: 'denied', rejection: err },
      record: {
        ...record, decision: 'denied', reason: err.reason, explanation: err.explanation, error: err.error,
        ...(err.ruleIds.length ? { ruleIds: err.ruleIds } : {}), checks: checks.record, warnings,
      },
    };
  } finally {
    stage('end');
  }
}
