/** The token exchange's read made ahead on PostgreSQL (src/exchange/read-ahead.ts): what it reads, and when the grant may use it. */
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { ExchangeLookup, ExchangeQuery } from '../../src/db/catalog.ts';
import { lookupReadAhead, readAheadQuery } from '../../src/exchange/read-ahead.ts';
import { ID_JAG, ID_TOKEN, TOKEN_EXCHANGE } from '../../src/exchange/request.ts';

const jwt = (payload: unknown) => `eyJhbGciOiJSUzI1NiJ9.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.c2ln`;
const ctxWith = (params: Record<string, unknown>, route = 'token') => ({ oidc: { route, params }, state: {} }) as unknown as KoaContextWithOIDC;
const exchangeParams = {
  grant_type: TOKEN_EXCHANGE, requested_token_type: ID_JAG, subject_token_type: ID_TOKEN, subject_token: jwt({ sub: 'alice-sub' }),
  audience: 'https://as.example', resource: ['https://mcp.example/a', 'https://mcp.example/a', 'https://mcp.example/b'],
};

describe('readAheadQuery', () => {
  test('a token exchange of an ID Token: its claimed sub, audience, resources (each once) and the client being read', () => {
    expect(readAheadQuery(ctxWith(exchangeParams), 'demo-agent')).toEqual({
      sub: 'alice-sub', audience: 'https://as.example', resources: ['https://mcp.example/a', 'https://mcp.example/b'], clientId: 'demo-agent',
    });
  });

  test.each([
    ['another route', ctxWith(exchangeParams, 'introspection')],
    ['another grant', ctxWith({ ...exchangeParams, grant_type: 'client_credentials' })],
    ['a refresh token as subject', ctxWith({ ...exchangeParams, subject_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' })],
    ['no audience', ctxWith({ ...exchangeParams, audience: undefined })],
    ['a subject token that is no JWT', ctxWith({ ...exchangeParams, subject_token: 'garbage' })],
    ['an ID Token without sub', ctxWith({ ...exchangeParams, subject_token: jwt({ iss: 'x' }) })],
    ['no request at all', undefined],
  ])('nothing to read ahead: %s', (_name, ctx) => {
    expect(readAheadQuery(ctx, 'demo-agent')).toBeUndefined();
  });
});

describe('lookupReadAhead', () => {
  const query: ExchangeQuery = { sub: 'alice-sub', audience: 'https://as.example', resources: ['https://mcp.example/a'], clientId: 'demo-agent' };
  const ahead = { member: undefined, resourceServer: undefined, mcpServers: [], rules: [], audSub: 'ahead' } as ExchangeLookup;
  const fresh = { ...ahead, audSub: 'read now' } as ExchangeLookup;

  test('the query read ahead is answered from it, once; any other is read', async () => {
    const reads: ExchangeQuery[] = [];
    const ctx = ctxWith(exchangeParams);
    const lookup = lookupReadAhead(ctx, async (q) => { reads.push(q); return fresh; });
    ctx.state.readAhead = { query, lookup: ahead };
    expect(await lookup({ ...query })).toBe(ahead);
    expect(await lookup({ ...query })).toBe(fresh);
    expect(reads).toHaveLength(1);
  });

  test.each([
    ['the verified sub differs from the claimed one', { sub: 'mallory-sub' }],
    ['another audience', { audience: 'https://other.example' }],
    ['other resources', { resources: ['https://mcp.example/a', 'https://mcp.example/b'] }],
    ['another client', { clientId: 'partner-app' }],
  ])('%s: read again', async (_name, change) => {
    const ctx = ctxWith(exchangeParams);
    ctx.state.readAhead = { query, lookup: ahead };
    expect(await lookupReadAhead(ctx, async () => fresh)({ ...query, ...change })).toBe(fresh);
    expect(ctx.state.readAhead).toBeUndefined();
  });
});
