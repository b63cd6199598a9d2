import type { WarningRecord } from '../audit/codec.ts';
import type { IdJagClaims } from './mint.ts';
import type { ExchangeInput, ExchangeRequest } from './request.ts';
import type { Target } from './target.ts';

/**
 * Warnings about requests that work but are discouraged: a conformance target should tell a client author
 * more than pass or fail. Each names the rule it leans on. They never change the decision.
 */
export type Warning = WarningRecord;

const w = (code: string, message: string, section: string): Warning => ({ code, message, section });

/** What the request itself shows, before any token or target is looked at. */
export function lintRequest(input: Pick<ExchangeInput, 'credentialsInBody'>, req: ExchangeRequest): Warning[] {
  const warnings: Warning[] = [];
  if (req.resources.length === 0) {
    warnings.push(w('resource_omitted', 'no resource parameter: the ID-JAG is then good for any MCP server of the Resource AS; resource is optional, but naming the MCP server (its RFC 9728 resource identifier) binds the ID-JAG to that one server',
      'RFC 8707 §2; MCP Enterprise-Managed Authorization (resource: optional; when present, the MCP server\'s resource identifier)'));
  }
  if (req.resources.length > 1) {
    warnings.push(w('several_resources', 'several resources in one request: the ID-JAG then carries only the scopes every one of them allows; one request per MCP server is clearer',
      'RFC 8707 §2; draft-ietf-oauth-identity-assertion-authz-grant §3 (resource)'));
  }
  if (input.credentialsInBody) {
    warnings.push(w('client_secret_post', 'client credentials sent in the request body (client_secret_post); the Authorization header (client_secret_basic) is the method every server must support',
      'RFC 6749 §2.3.1'));
  }
  if (req.scopes === undefined) {
    warnings.push(w('scope_omitted', 'no scope parameter: the rule\'s default scopes apply, which the client cannot know in advance; name the scopes it needs',
      'RFC 8693 §2.1; RFC 6749 §3.3'));
  }
  return warnings;
}

/** What the resolved target shows about the request. */
export function lintTarget(req: ExchangeRequest, target: Target): Warning[] {
  const warnings: Warning[] = [];
  if (req.audience !== target.resourceServer.issuer) {
    warnings.push(w('audience_alias', `audience ${req.audience} is an alias; the Resource AS's issuer identifier is ${target.resourceServer.issuer}`,
      'draft-ietf-oauth-identity-assertion-authz-grant §4.3 (audience); RFC 8414 §2'));
  }
  if (req.scopes && target.mcpServers.length) {
    const defined = new Set(target.mcpServers.flatMap((m) => m.scopes));
    const unknown = req.scopes.filter((s) => !defined.has(s));
    if (unknown.length) {
      warnings.push(w('scope_not_defined', `requested scope${unknown.length > 1 ? 's' : ''} ${unknown.join(' ')} ${unknown.length > 1 ? 'are' : 'is'} not defined by the requested MCP server${target.mcpServers.length > 1 ? 's' : ''} (see scopes_supported in its protected resource metadata)`,
        'RFC 9728 §2 (scopes_supported); RFC 6749 §3.3'));
    }
  }
  return warnings;
}

/** What the ID-JAG it would issue shows: what the Resource AS will have to find its account for the user. */
export function lintClaims(claims: Pick<IdJagClaims, 'email' | 'aud_sub' | 'aud'>): Warning[] {
  if (claims.email !== undefined || claims.aud_sub !== undefined) return [];
  return [w('no_email_or_aud_sub', `the ID-JAG carries neither email nor aud_sub: ${claims.aud} gets only this IdP's sub to find its account for the user; release email to that Resource AS, or map the user's aud_sub there (admin)`,
    'draft-ietf-oauth-identity-assertion-authz-grant §3 (email, aud_sub: at least one RECOMMENDED)')];
}
