/** The change counters read with the client ahead of a token exchange (src/exchange/read-ahead.ts): when, and taken once. */
import type { KoaContextWithOIDC } from 'oidc-provider';
import { readsAhead, takeCounters } from '../../src/exchange/read-ahead.ts';
import { TOKEN_EXCHANGE } from '../../src/exchange/request.ts';

const ctxWith = (params: Record<string, unknown>, route = 'token') => ({ oidc: { route, params }, state: {} }) as unknown as KoaContextWithOIDC;

test('a token exchange at the token endpoint reads the counters with its client', () => {
  expect(readsAhead(ctxWith({ grant_type: TOKEN_EXCHANGE }))).toBe(true);
});

test.each([
  ['another route', ctxWith({ grant_type: TOKEN_EXCHANGE }, 'introspection')],
  ['another grant', ctxWith({ grant_type: 'client_credentials' })],
  ['no parameters yet', { oidc: { route: 'token' }, state: {} } as unknown as KoaContextWithOIDC],
  ['no request at all', undefined],
])('%s: the client alone', (_name, ctx) => {
  expect(readsAhead(ctx)).toBe(false);
});

test('the counters are taken once', () => {
  const ctx = ctxWith({ grant_type: TOKEN_EXCHANGE });
  ctx.state.counters = { directory: 3, catalog: 7 };
  expect(takeCounters(ctx)).toEqual({ directory: 3, catalog: 7 });
  expect(takeCounters(ctx)).toBeUndefined();
});
