import Tokens from 'csrf';
import type { Context, Next } from 'koa';

const tokens = new Tokens();
const COOKIE = 'idjag.csrf';

/**
 * Synchronizer tokens (pillarjs/csrf): a per-browser secret in a signed, HttpOnly cookie, and a token derived
 * from it in every form. A cross-site page can neither read the cookie nor compute the token.
 */
export function csrfToken(ctx: Context): string {
  let secret = ctx.cookies.get(COOKIE, { signed: true });
  if (!secret) {
    secret = tokens.secretSync();
    ctx.cookies.set(COOKIE, secret, { signed: true, httpOnly: true, sameSite: 'lax', path: '/', secure: ctx.secure });
  }
  return tokens.create(secret);
}

export function csrfValid(ctx: Context, token: unknown): boolean {
  const secret = ctx.cookies.get(COOKIE, { signed: true });
  return typeof secret === 'string' && typeof token === 'string' && tokens.verify(secret, token);
}

/** Refuses a state-changing request whose token is missing or stale, before any handler runs. */
export function requireCsrf(onFailure: (ctx: Context) => void) {
  return async (ctx: Context, next: Next) => {
    const body = (ctx.request as { body?: Record<string, unknown> }).body;
    const token = body?._csrf ?? ctx.get('x-csrf-token');
    if (!csrfValid(ctx, token)) return onFailure(ctx);
    return next();
  };
}
