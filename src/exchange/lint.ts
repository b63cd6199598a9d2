import type { WarningRecord } from '../audit/codec.ts';
import type { IdJagClaims } from './mint.ts';
import type { ExchangeInput, ExchangeRequest } from './request.ts';
import type { Target } from './target.ts';

/**
 * Warnings about requests that work but are discouraged: a conformance target should tell a client author
 * more than pass or fail. Each names the rule it leans on. They never change the decision.
 */
export type Warning = WarningRecord;

/**
 * Every warning's section, and its message when that never varies: the audit row stores a warning by code
 * alone when it says what is written here (src/audit/codec.ts), so these strings are part of the stored
 * format. Changing one is safe (rows written before kept what differed), removing a code is not.
 */
export const WARNINGS: Readonly<Record<string, { section: string; message?: string }>> = {
  resource_omitted: {
    section: 'RFC 8707 §2; MCP Enterprise-Managed Authorization (resource: optional; when present, the MCP server\'s resource identifier)',
    message: 'no resource parameter: the ID-JAG is then good for any MCP server of the Resource AS; resource is optional, but naming the MCP server (its RFC 9728 resource identifier) binds the ID-JAG to that one server',
  },
  several_resources: {
    section: 'RFC 8707 §2; draft-ietf-oauth-identity-assertion-authz-grant §3 (resource)',
    message: 'several resources in one request: the ID-JAG then carries only the scopes every one of them allows; one request per MCP server is clearer',
  },
  client_secret_post: {
    section: 'RFC 6749 §2.3.1',
    message: 'client credentials sent in the request body (client_secret_post); the Authorization header (client_secret_basic) is the method every server must support',
  },
  scope_omitted: {
    section: 'RFC 8693 §2.1; RFC 6749 §3.3',
    message: 'no scope parameter: the rule\'s default scopes apply, which the client cannot know in advance; name the scopes it needs',
  },
  audience_alias: { section: 'draft-ietf-oauth-identity-assertion-authz-grant §4.3 (audience); RFC 8414 §2' },
  scope_not_defined: { section: 'RFC 9728 §2 (scopes_supported); RFC 6749 §3.3' },
  no_email_or_aud_sub: { section: 'draft-ietf-oauth-identity-assertion-authz-grant §3 (email, aud_sub: at least one RECOMMENDED)' },
};

/**
 * Each warning's number in the stored form: its index here. Append only, as the check codes: a stored row
 * names its warnings by these numbers, so a code is never removed or moved.
 */
export const WARNING_CODES: readonly string[] = [
  'resource_omitted', 'several_resources', 'client_secret_post', 'scope_omitted', 'audience_alias', 'scope_not_defined', 'no_email_or_aud_sub',
];

/** A warning as defined above; `message` only for those whose message varies. */
function w(code: keyof typeof WARNINGS, message?: string): Warning {
  const def = WARNINGS[code]!;
  return { code, message: message ?? def.message!, section: def.section };
}

/** What the request itself shows, before any token or target is looked at. */
export function lintRequest(input: Pick<ExchangeInput, 'credentialsInBody'>, req: ExchangeRequest): Warning[] {
  const warnings: Warning[] = [];
  if (req.resources.length === 0) {
    warnings.push(w('resource_omitted'));
  }
  if (req.resources.length > 1) {
    warnings.push(w('several_resources'));
  }
  if (input.credentialsInBody) {
    warnings.push(w('client_secret_post'));
  }
  if (req.scopes === undefined) {
    warnings.push(w('scope_omitted'));
  }
  return warnings;
}

/** What the resolved target shows about the request. */
export function lintTarget(req: ExchangeRequest, target: Target): Warning[] {
  const warnings: Warning[] = [];
  if (req.audience !== target.resourceServer.issuer) {
    warnings.push(w('audience_alias', `audience ${req.audience} is an alias; the Resource AS's issuer identifier is ${target.resourceServer.issuer}`));
  }
  if (req.scopes && target.mcpServers.length) {
    const defined = new Set(target.mcpServers.flatMap((m) => m.scopes));
    const unknown = req.scopes.filter((s) => !defined.has(s));
    if (unknown.length) {
      warnings.push(w('scope_not_defined', `requested scope${unknown.length > 1 ? 's' : ''} ${unknown.join(' ')} ${unknown.length > 1 ? 'are' : 'is'} not defined by the requested MCP server${target.mcpServers.length > 1 ? 's' : ''} (see scopes_supported in its protected resource metadata)`));
    }
  }
  return warnings;
}

/** What the ID-JAG it would issue shows: what the Resource AS will have to find its account for the user. */
export function lintClaims(claims: Pick<IdJagClaims, 'email' | 'aud_sub' | 'aud'>): Warning[] {
  if (claims.email !== undefined || claims.aud_sub !== undefined) return [];
  return [w('no_email_or_aud_sub', `the ID-JAG carries neither email nor aud_sub: ${claims.aud} gets only this IdP's sub to find its account for the user; release email to that Resource AS, or map the user's aud_sub there (admin)`)];
}
