import type { Context, Next } from 'koa';

/**
 * MCP clients discover the token endpoint from RFC 8414 authorization server metadata: serve the OpenID
 * discovery document there too (the provider serves only the OpenID path; the two documents' members agree).
 */
export async function authorizationServerMetadata(ctx: Context, next: Next): Promise<void> {
  if (ctx.method === 'GET' && ctx.path === '/.well-known/oauth-authorization-server') ctx.path = '/.well-known/openid-configuration';
  return next();
}
