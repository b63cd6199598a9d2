import { z } from 'zod';

/** The field types the configuration document and the admin inputs share. */

export const Name = z.string().trim().min(1).max(200);

export const Description = z.string().max(500);

/** RFC 6749 §3.3 scope-token. */
export const Scope = z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, 'scope tokens are printable ASCII without spaces, quotes or backslashes (RFC 6749 §3.3)');

/** RFC 8707 / RFC 8414 identifiers: absolute URIs without a fragment. */
export const Uri = z.string().max(2048).refine((v) => URL.canParse(v) && !v.includes('#'), 'must be an absolute URI without a fragment');

/**
 * Which URLs the catalog accepts for Resource AS issuers and MCP server resources: https only in production
 * (the MCP extension requires https for the authorization server's and the MCP server's endpoints); in
 * development http too, for servers on the loopback interface.
 */
export interface UrlPolicy {
  httpsOnly: boolean;
}

export const DEVELOPMENT_URLS: UrlPolicy = { httpsOnly: false };

/** What is wrong with `url` under the policy, or undefined when it is acceptable. */
export function insecureUrl(url: string, policy: UrlPolicy): string | undefined {
  if (!policy.httpsOnly || (URL.canParse(url) && new URL(url).protocol === 'https:')) return undefined;
  return 'must be an https URL in production mode: the MCP extension requires https for authorization servers and MCP servers (http is accepted in development only)';
}

export const GroupName = z.string().trim().regex(/^[A-Za-z0-9._-]{1,100}$/, 'group names use letters, digits, dot, dash and underscore');

export const Username = z.string().trim().regex(/^[A-Za-z0-9._@-]{1,200}$/, 'usernames use letters, digits and . _ @ -');

export const ClientId = z.string().trim().regex(/^[A-Za-z0-9._~:/-]{1,200}$/, 'client ids use letters, digits and . _ ~ : / -');

export const RuleId = z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, 'rule ids use letters, digits, dot, dash and underscore');

/** Query-string booleans, as links and HTML forms send them. */
export const QueryBoolean = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

/** A LIKE pattern that matches `text` literally inside a longer string (with ESCAPE '\'). */
export function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}
