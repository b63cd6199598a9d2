import type { Context } from 'koa';
import { now, type DB } from '../../db/index.ts';
import { findEnabledMember } from '../../db/users.ts';
import type { PendingSignIn } from './sign-in.ts';

/**
 * The admin UI's own cookies, all signed with the app's cookie keys, HttpOnly, SameSite=Lax (the callback
 * arrives as a top-level redirect from the provider), Secure over https, and scoped to /admin:
 * - `idjag.admin`: the session, the admin's sub and an absolute expiry, nothing else;
 * - `idjag.admin.signin`: the state, nonce and PKCE verifier of a sign-in in progress;
 * - `idjag.admin.flash`: a one-line message for the page after a redirect.
 *
 * The session cookie is only a claim of who signed in: every request re-reads the user, so disabling an admin
 * or removing them from the admins group shuts them out at their next click.
 */

export const ADMIN_GROUP = 'admins';
export const SESSION_TTL = 8 * 3600;

const SESSION = 'idjag.admin';
const SIGN_IN = 'idjag.admin.signin';
const FLASH = 'idjag.admin.flash';

const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

function decode(text: string | undefined): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(Buffer.from(text, 'base64url').toString());
  } catch {
    return undefined;
  }
}

function setCookie(ctx: Context, name: string, value: unknown, maxAgeSeconds?: number): void {
  ctx.cookies.set(name, value === null ? null : encode(value), {
    signed: true, httpOnly: true, sameSite: 'lax', secure: ctx.secure, path: '/admin', overwrite: true,
    ...(maxAgeSeconds === undefined ? {} : { maxAge: maxAgeSeconds * 1000 }),
  });
}

const getCookie = (ctx: Context, name: string) => decode(ctx.cookies.get(name, { signed: true }));

export interface AdminUser {
  sub: string;
  username: string;
  name: string | null;
}

export function startSession(ctx: Context, sub: string): void {
  setCookie(ctx, SESSION, { sub, exp: now() + SESSION_TTL });
}

export function endSession(ctx: Context): void {
  setCookie(ctx, SESSION, null);
}

/** The session's subject, while the cookie is intact and unexpired. */
function sessionSub(ctx: Context): string | undefined {
  const s = getCookie(ctx, SESSION) as { sub?: unknown; exp?: unknown } | undefined;
  return s && typeof s.sub === 'string' && typeof s.exp === 'number' && s.exp > now() ? s.sub : undefined;
}

/** Whether this user may use the admin UI now: enabled, and a member of the admins group. */
export async function findAdmin(db: DB, sub: string): Promise<AdminUser | undefined> {
  return findEnabledMember(db, sub, ADMIN_GROUP);
}

export type SessionState = { kind: 'none' } | { kind: 'admin'; user: AdminUser } | { kind: 'forbidden'; sub: string };

/** Who is asking: nobody signed in, an admin, or someone signed in who is not (or no longer) an admin. */
export async function currentSession(ctx: Context, db: DB): Promise<SessionState> {
  const sub = sessionSub(ctx);
  if (!sub) return { kind: 'none' };
  const user = await findAdmin(db, sub);
  return user ? { kind: 'admin', user } : { kind: 'forbidden', sub };
}

export function rememberSignIn(ctx: Context, pending: PendingSignIn): void {
  setCookie(ctx, SIGN_IN, pending, pending.exp - now());
}

/** The sign-in in progress, read once: the cookie is cleared so a callback URL cannot be replayed. */
export function takeSignIn(ctx: Context): PendingSignIn | undefined {
  const p = getCookie(ctx, SIGN_IN) as Partial<PendingSignIn> | undefined;
  setCookie(ctx, SIGN_IN, null);
  if (!p || typeof p.state !== 'string' || typeof p.nonce !== 'string' || typeof p.verifier !== 'string'
    || typeof p.next !== 'string' || typeof p.exp !== 'number' || p.exp <= now()) return undefined;
  return p as PendingSignIn;
}

export interface Flash {
  kind: 'ok' | 'error';
  text: string;
}

export function flash(ctx: Context, kind: Flash['kind'], text: string): void {
  setCookie(ctx, FLASH, { kind, text: text.slice(0, 1000) }, 60);
}

export function takeFlash(ctx: Context): Flash | undefined {
  const f = getCookie(ctx, FLASH) as Partial<Flash> | undefined;
  if (f === undefined) return undefined;
  setCookie(ctx, FLASH, null);
  return (f.kind === 'ok' || f.kind === 'error') && typeof f.text === 'string' ? { kind: f.kind, text: f.text } : undefined;
}

/** Only admin pages of this origin are places to return to after signing in (no open redirect). */
export function safeNext(value: unknown, fallback = '/admin'): string {
  if (typeof value !== 'string' || !value.startsWith('/admin') || value.startsWith('/admin/api')) return fallback;
  const url = new URL(value, 'http://idjag.invalid');
  if (url.origin !== 'http://idjag.invalid' || !/^\/admin(\/|$)/.test(url.pathname)) return fallback;
  return `${url.pathname}${url.search}`;
}

declare module 'koa' {
  interface DefaultState {
    /** the admin UI's signed-in admin, re-checked on every request */
    adminUser?: AdminUser;
  }
}
