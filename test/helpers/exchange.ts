import { DEMO_AGENT, tokenRequest, type TokenResponse } from './browser.ts';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
export const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
export const REFRESH_TOKEN = 'urn:ietf:params:oauth:token-type:refresh_token';
export const TODO_AS = 'https://auth.todo.example';
export const TODO_MCP = 'https://mcp.todo.example/mcp';
export const TODO_ADMIN_MCP = 'https://mcp.todo.example/admin';

/** A token-exchange request for an ID-JAG; `over` replaces or (with undefined) removes parameters; `headers` (a DPoP proof) are added. */
export function exchange(base: string, subjectToken: string, over: Record<string, string | string[] | undefined> = {}, auth: { id: string; secret: string } | null = DEMO_AGENT, headers: Record<string, string> = {}): Promise<TokenResponse> {
  const form: Record<string, string | string[] | undefined> = {
    grant_type: TOKEN_EXCHANGE,
    requested_token_type: ID_JAG,
    subject_token: subjectToken,
    subject_token_type: ID_TOKEN,
    audience: TODO_AS,
    resource: TODO_MCP,
    ...over,
  };
  const clean = Object.fromEntries(Object.entries(form).filter(([, v]) => v !== undefined)) as Record<string, string | string[]>;
  return tokenRequest(base, clean, auth, headers);
}
