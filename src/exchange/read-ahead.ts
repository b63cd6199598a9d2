import type { KoaContextWithOIDC } from 'oidc-provider';
import { lookupClientAndExchange, type ExchangeLookup, type ExchangeQuery } from '../db/catalog.ts';
import type { EnabledClient } from '../db/clients.ts';
import type { DB } from '../db/index.ts';
import type { ExchangePorts } from './pipeline.ts';
import { ID_TOKEN, requestedResources, TOKEN_EXCHANGE, unverifiedSubject, type Params } from './request.ts';

/**
 * PostgreSQL: an exchange's reads made ahead, with the provider's read of the client. On PostgreSQL every
 * statement is a round trip, and the provider reads the client (to authenticate it) before the grant can read
 * anything else; for a token exchange of an ID Token, the user, the target and the client's rules there are
 * read in the same statement, keyed by what the request claims (the ID Token's `sub` unverified). The grant
 * uses that read only if the query it makes is that one, the verified `sub` included; otherwise (a forged or
 * odd request) it reads again. Nothing is decided on what the request claims: it only picks what to read.
 */

declare module 'koa' {
  interface DefaultState {
    /** the exchange's lookup read with the client (read-ahead.ts), for the query it answers */
    readAhead?: { query: ExchangeQuery; lookup: ExchangeLookup };
  }
}

/** What a token exchange request will look up, as far as it can be told before the client is authenticated. */
export function readAheadQuery(ctx: KoaContextWithOIDC | undefined, clientId: string): ExchangeQuery | undefined {
  if (ctx?.oidc?.route !== 'token') return undefined;
  const p = (ctx.oidc.params ?? {}) as Params;
  if (p.grant_type !== TOKEN_EXCHANGE || p.subject_token_type !== ID_TOKEN) return undefined;
  const { subject_token: token, audience } = p;
  if (typeof token !== 'string' || typeof audience !== 'string' || audience === '') return undefined;
  const sub = unverifiedSubject(token);
  return sub === undefined ? undefined : { sub, audience, resources: requestedResources(p), clientId };
}

/** The client, and in the same statement the exchange's lookup for `query`, stashed for the grant. */
export async function readClientAhead(db: DB, ctx: KoaContextWithOIDC, query: ExchangeQuery): Promise<EnabledClient | undefined> {
  const { client, lookup } = await lookupClientAndExchange(db, query);
  ctx.state.readAhead = { query, lookup };
  return client;
}

const sameQuery = (a: ExchangeQuery, b: ExchangeQuery): boolean =>
  a.sub === b.sub && a.audience === b.audience && a.clientId === b.clientId
  && a.resources.length === b.resources.length && a.resources.every((r, i) => r === b.resources[i]);

/** The grant's lookup: the one read ahead when it answers this very query (taken once), else `read`'s. */
export function lookupReadAhead(ctx: KoaContextWithOIDC, read: NonNullable<ExchangePorts['lookup']>): NonNullable<ExchangePorts['lookup']> {
  return async (q) => {
    const ahead = ctx.state.readAhead;
    delete ctx.state.readAhead;
    return ahead && sameQuery(ahead.query, q) ? ahead.lookup : read(q);
  };
}
