/**
 * What the parts of one request tell each other through koa's `ctx.state`, declared once: koa's DefaultState
 * is augmented here, so every middleware and handler reads and writes these with their types.
 */

/** The token exchange's own bookkeeping, read after the provider has answered (src/exchange). */
export interface ExchangeState {
  /** performance.now() when the request reached the exchange's middleware */
  started: number;
  /** the grant ran: it answered, and audited or failed closed, itself */
  handled?: boolean;
  audited?: boolean;
  /** a step-up refusal's max_age, added to the provider's error body */
  maxAge?: number;
}

/** A request a rate limit refused (src/throttle/index.ts, src/oidc/client-auth.ts), for the exchange's audit row. */
export interface Throttled {
  /** which limit refused it: failed client authentications (before the secret was looked at) or token requests (after) */
  limit: 'client_authentication' | 'token';
  retryAfter: number;
  /** what the client was told */
  description: string;
  /** for the audit log */
  explanation: string;
}

declare module 'koa' {
  interface DefaultState {
    /** X-Request-Id: the client's, when well-formed, or a fresh UUIDv7 (src/main.ts) */
    requestId?: string;
    /**
     * The request id when idjag generated it: the id of the request's audit row and the `jti` of an ID-JAG it
     * issues, so one identifier names all three (taken once: takeAuditId).
     */
    auditId?: string;
    exchange?: ExchangeState;
    throttled?: Throttled;
    /** the token endpoint's rate limit counted this request already */
    tokenRequestCounted?: boolean;
  }
}

/** The id for this request's audit row: the request's own, once; any other row of it gets a fresh one. */
export function takeAuditId(ctx: { state: import('koa').DefaultState }, fresh: () => string): string {
  const id = ctx.state.auditId ?? fresh();
  delete ctx.state.auditId;
  return id;
}

export const exchangeState = (ctx: { state: import('koa').DefaultState }): ExchangeState =>
  (ctx.state.exchange ??= { started: performance.now() });
