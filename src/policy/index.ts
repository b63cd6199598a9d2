/**
 * The decision engine: a pure function from a request's facts and the candidate rules to a decision. No I/O,
 * no clock, no imports from the rest of the project, so the token endpoint and the admin's simulator run the
 * very same code, and a table of cases tests it completely.
 */

export type Subjects =
  | { kind: 'everyone' }
  | { kind: 'groups'; groups: string[] }
  | { kind: 'users'; subs: string[] };

export interface Rule {
  id: string;
  clientId: string;
  resourceServerId: string;
  /** null: the rule covers the whole Resource AS */
  mcpServerId: string | null;
  subjects: Subjects;
  scopes: string[];
  defaultScopes: string[];
  /** the client's id at the Resource AS; null means the same as at the IdP */
  rsClientId: string | null;
  /** ID-JAG lifetime in seconds */
  lifetime: number;
  /** step-up: the longest time since the user's login this rule accepts, in seconds */
  maxAuthAge: number | null;
  enabled: boolean;
  /** epoch seconds: the rule applies from this instant on (inclusive); null: since it was made */
  notBefore: number | null;
  /** epoch seconds: the rule applies until just before this instant (exclusive); null: until changed */
  expiresAt: number | null;
  /**
   * the RFC 9396 authorization_details types its client may be granted (none when absent). Not read here:
   * the exchange grants details once this engine has chosen the rules (src/exchange/pipeline.ts).
   */
  authorizationDetailsTypes?: string[];
}

export interface McpServerFacts {
  id: string;
  resource: string;
  enabled: boolean;
  scopes: string[];
}

/**
 * Whether the client may authenticate, the user is enabled and the target is enabled are decided before
 * policy, by the checks that own them (client authentication, the user check, the target): the engine is
 * asked only about enabled parties.
 */
export interface PolicyInput {
  client: { id: string };
  user: { sub: string; groups: string[] };
  resourceServer: { id: string };
  /** the requested MCP servers; empty for an audience-only request */
  mcpServers: McpServerFacts[];
  /** undefined or empty: no `scope` parameter was sent */
  requestedScopes?: string[];
  /** epoch seconds of the user's login, when known */
  authTime?: number;
  /** epoch seconds */
  now: number;
}

/** Every reason a denial can give: a closed set (metrics label their counters with it). */
export const DENY_REASONS = [
  'no_rule',
  'rule_disabled',
  'subject_not_allowed',
  'rule_expired',
  'rule_not_yet_valid',
  'rules_disagree',
  'scope_not_allowed',
  'no_scope_requested',
  'step_up_required',
] as const;

export type DenyReason = (typeof DENY_REASONS)[number];

export type PolicyError = 'invalid_target' | 'invalid_scope' | 'insufficient_user_authentication';

export interface Allow {
  allow: true;
  scopes: string[];
  /** the rule that decided, one per MCP server (one for an audience-only request) */
  ruleIds: string[];
  lifetime: number;
  rsClientId: string;
  explanation: string;
}

export interface Deny {
  allow: false;
  reason: DenyReason;
  error: PolicyError;
  /** for the audit log and the admin; may name rules and groups, so never sent to the client as is */
  explanation: string;
  /** for the client: says what to change without disclosing policy */
  description: string;
  ruleIds: string[];
  /** with step_up_required: the max_age to sign in again with */
  maxAge?: number;
}

export type Decision = Allow | Deny;

export const MAX_LIFETIME = 3600;

const deny = (reason: DenyReason, error: PolicyError, explanation: string, description: string, extra: Partial<Deny> = {}): Deny =>
  ({ allow: false, reason, error, explanation, description, ruleIds: [], ...extra });

/** Which resource a rule can serve: its own MCP server, or any of its Resource AS when it names none. */
function covers(rule: Rule, mcp: McpServerFacts | undefined): boolean {
  return rule.mcpServerId === null || (mcp !== undefined && rule.mcpServerId === mcp.id);
}

/** Whether a time-bound rule is in force at `now`: from `notBefore` (inclusive) to `expiresAt` (exclusive). */
function inForce(rule: Rule, now: number): boolean {
  return (rule.notBefore === null || now >= rule.notBefore) && (rule.expiresAt === null || now < rule.expiresAt);
}

const iso = (seconds: number) => new Date(seconds * 1000).toISOString();

/** Why each rule is out of force at `now`, in the admin's words. */
function outOfForce(rules: Rule[], now: number): string {
  return rules.map((r) => (r.expiresAt !== null && now >= r.expiresAt ? `rule ${r.id} expired at ${iso(r.expiresAt)}`
    : `rule ${r.id} is valid from ${iso(r.notBefore!)}`)).join('; ');
}

function appliesTo(rule: Rule, user: PolicyInput['user']): boolean {
  switch (rule.subjects.kind) {
    case 'everyone': return true;
    case 'groups': return rule.subjects.groups.some((g) => user.groups.includes(g));
    case 'users': return rule.subjects.subs.includes(user.sub);
  }
}

/** More specific rules win ties: a named MCP server over a whole AS, named users over groups over everyone. */
function specificity(rule: Rule): number {
  const target = rule.mcpServerId === null ? 0 : 10;
  const who = { users: 2, groups: 1, everyone: 0 }[rule.subjects.kind];
  return target + who;
}

function grantable(rule: Rule, mcp: McpServerFacts | undefined, requested: string[] | undefined): string[] {
  const wanted = requested && requested.length ? requested : rule.defaultScopes;
  const defined = mcp ? new Set(mcp.scopes) : undefined;
  return unique(wanted.filter((s) => rule.scopes.includes(s) && (!defined || defined.has(s))));
}

interface PerTarget { rule: Rule; scopes: string[] }

/** The decision for one MCP server (or, with `mcp` undefined, the Resource AS as a whole). */
function decideOne(input: PolicyInput, rules: Rule[], mcp: McpServerFacts | undefined): PerTarget | Deny {
  const what = mcp ? `MCP server ${mcp.resource}` : 'the Resource AS (audience-only request)';
  const forTarget = rules.filter((r) => r.clientId === input.client.id && r.resourceServerId === input.resourceServer.id && covers(r, mcp))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (forTarget.length === 0) {
    return deny('no_rule', 'invalid_target', `no rule lets client ${input.client.id} reach ${what}`,
      `client ${input.client.id} is not allowed to obtain an ID-JAG for ${mcp ? `resource ${mcp.resource}` : 'this audience'}`);
  }
  const enabled = forTarget.filter((r) => r.enabled);
  if (enabled.length === 0) {
    return deny('rule_disabled', 'invalid_target', `every rule for client ${input.client.id} and ${what} is disabled (${ids(forTarget)})`,
      `client ${input.client.id} is not allowed to obtain an ID-JAG for ${mcp ? `resource ${mcp.resource}` : 'this audience'}`, { ruleIds: forTarget.map((r) => r.id) });
  }
  const applicable = enabled.filter((r) => appliesTo(r, input.user));
  if (applicable.length === 0) {
    return deny('subject_not_allowed', 'invalid_target',
      `rules ${ids(enabled)} for client ${input.client.id} and ${what} do not include user ${input.user.sub} (groups: ${input.user.groups.join(', ') || 'none'})`,
      `this user may not use client ${input.client.id} to reach ${mcp ? `resource ${mcp.resource}` : 'this audience'}`, { ruleIds: enabled.map((r) => r.id) });
  }
  // A time-bound rule out of force is checked after the subjects, so the denial says that the rule which
  // would have let this user in expired (or is not valid yet), rather than that nothing covers the user.
  const current = applicable.filter((r) => inForce(r, input.now));
  if (current.length === 0) {
    const expired = applicable.every((r) => r.expiresAt !== null && input.now >= r.expiresAt);
    return deny(expired ? 'rule_expired' : 'rule_not_yet_valid', 'invalid_target',
      `no rule for client ${input.client.id} and ${what} that includes user ${input.user.sub} is in force at ${iso(input.now)}: ${outOfForce(applicable, input.now)}`,
      `this user may not use client ${input.client.id} to reach ${mcp ? `resource ${mcp.resource}` : 'this audience'} at this time`, { ruleIds: applicable.map((r) => r.id) });
  }
  // The rule granting the most of what was asked decides; then the most specific; then the lowest id, so
  // the same facts always pick the same rule.
  const ranked = current
    .map((rule) => ({ rule, scopes: grantable(rule, mcp, input.requestedScopes) }))
    .sort((a, b) => b.scopes.length - a.scopes.length || specificity(b.rule) - specificity(a.rule) || (a.rule.id < b.rule.id ? -1 : 1));
  const best = ranked[0]!;
  if (best.scopes.length === 0) {
    const asked = input.requestedScopes?.length ? input.requestedScopes : undefined;
    return asked
      ? deny('scope_not_allowed', 'invalid_scope', `rule ${best.rule.id} grants none of the requested scopes (${asked.join(' ')}) for ${what}`,
        `none of the requested scopes (${asked.join(' ')}) may be granted${mcp ? ` for resource ${mcp.resource}` : ''}`, { ruleIds: [best.rule.id] })
      : deny('no_scope_requested', 'invalid_scope', `no scope was requested and rule ${best.rule.id} has no default scopes for ${what}`,
        `no scope was requested and none is granted by default${mcp ? `; request scopes defined by resource ${mcp.resource}` : ''}`, { ruleIds: [best.rule.id] });
  }
  return best;
}

export function decide(input: PolicyInput, rules: Rule[]): Decision {

  const targets: (McpServerFacts | undefined)[] = input.mcpServers.length ? input.mcpServers : [undefined];
  const chosen: PerTarget[] = [];
  for (const mcp of targets) {
    const one = decideOne(input, rules, mcp);
    if ('allow' in one) return one;
    chosen.push(one);
  }

  // Several resources in one ID-JAG share one `scope` and one `client_id`: grant only what every one of
  // them allows, so the token cannot carry a scope to a server whose rule did not grant it.
  const scopes = chosen.slice(1).reduce((acc, c) => acc.filter((s) => c.scopes.includes(s)), chosen[0]!.scopes);
  const ruleIds = unique(chosen.map((c) => c.rule.id));
  const rsClientIds = unique(chosen.map((c) => c.rule.rsClientId ?? input.client.id));
  if (rsClientIds.length > 1) {
    return deny('rules_disagree', 'invalid_target', `the requested resources map client ${input.client.id} to different Resource-AS client ids (${rsClientIds.join(', ')}) through rules ${ruleIds.join(', ')}`,
      'the requested resources cannot share one ID-JAG; request them one at a time', { ruleIds });
  }
  if (scopes.length === 0) {
    const asked = Boolean(input.requestedScopes?.length);
    return deny(asked ? 'scope_not_allowed' : 'no_scope_requested', 'invalid_scope', `rules ${ruleIds.join(', ')} grant no scope common to all requested resources`,
      asked ? 'no requested scope may be granted for all of the requested resources together; request them one at a time'
        : 'no scope was requested and the requested resources have no default scope in common; request scopes, or one resource at a time', { ruleIds });
  }

  const maxAge = chosen.map((c) => c.rule.maxAuthAge).filter((a): a is number => a !== null).sort((a, b) => a - b)[0];
  if (maxAge !== undefined && (input.authTime === undefined || input.now - input.authTime > maxAge)) {
    const age = input.authTime === undefined ? 'unknown' : `${input.now - input.authTime} s`;
    return deny('step_up_required', 'insufficient_user_authentication',
      `rules ${ruleIds.join(', ')} require a login within ${maxAge} s; the user's login is ${age} old`,
      `the user must sign in again (max_age=${maxAge}) before this ID-JAG can be issued`, { ruleIds, maxAge });
  }

  const lifetime = Math.min(MAX_LIFETIME, ...chosen.map((c) => c.rule.lifetime));
  return {
    allow: true,
    scopes,
    ruleIds,
    lifetime,
    rsClientId: rsClientIds[0]!,
    explanation: `allowed by rule${ruleIds.length > 1 ? 's' : ''} ${ruleIds.join(', ')}: scopes ${scopes.join(' ')}, lifetime ${lifetime} s`,
  };
}

function unique<T>(list: T[]): T[] {
  return [...new Set(list)];
}

function ids(rules: Rule[]): string {
  return rules.map((r) => r.id).join(', ');
}
