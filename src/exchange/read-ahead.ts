import type { KoaContextWithOIDC } from 'oidc-provider';
import { findEnabledClientCounted, type EnabledClient } from '../db/clients.ts';
import { coalesced } from '../db/coalesce.ts';
import type { Counters } from '../db/counters.ts';
import type { DB } from '../db/index.ts';
import { TOKEN_EXCHANGE, type Params } from './request.ts';

/**
 * A token exchange's change counters (src/db/counters.ts), read with its client. The provider reads the client
 * (to authenticate it) before the grant runs; for a token exchange that same statement also reads the counters
 * the grant's lookup cache is checked against (src/exchange/lookup-cache.ts), so an exchange whose user and
 * target are held makes no read of its own. Counters read a moment before the grant runs are as good as any:
 * the exchange then sees every change committed before its request was read.
 */

declare module 'koa' {
  interface DefaultState {
    /** the change counters read with the client (read-ahead.ts), taken once by the grant */
    counters?: Counters;
  }
}

/** Whether the client being read is for a token exchange at the token endpoint. */
export function readsAhead(ctx: KoaContextWithOIDC | undefined): ctx is KoaContextWithOIDC {
  return ctx?.oidc?.route === 'token' && (ctx.oidc.params as Params | undefined)?.grant_type === TOKEN_EXCHANGE;
}

// per database: the token exchanges of one burst that name the same client share its read (src/db/coalesce.ts)
const sharedReads = new WeakMap<DB, (clientId: string) => ReturnType<typeof findEnabledClientCounted>>();

/** The enabled client, and in the same statement the change counters, kept for the grant. */
export async function readClientAhead(db: DB, ctx: KoaContextWithOIDC, clientId: string): Promise<EnabledClient | undefined> {
  let read = sharedReads.get(db);
  if (!read) {
    read = coalesced((id: string) => findEnabledClientCounted(db, id));
    sharedReads.set(db, read);
  }
  const found = await read(clientId);
  if (found) ctx.state.counters = found.counters;
  return found?.client;
}

/** The counters read with the client, once; undefined if none were (the grant then reads them itself). */
export function takeCounters(ctx: KoaContextWithOIDC): Counters | undefined {
  const { counters } = ctx.state;
  delete ctx.state.counters;
  return counters;
}
