import Router from '@koa/router';
import type { Context } from 'koa';
import { forbidden, type UiDeps, type UiRouter } from './page.ts';
import { endSession, findAdmin, rememberSignIn, safeNext, startSession, takeSignIn } from './session.ts';
import { beginSignIn, completeSignIn, endSessionUrl, ensureAdminUiClient, SignInFailed } from './sign-in.ts';

/** The pages reachable without a session: start a sign-in, its callback, and the page after signing out. */
export function signInRoutes(deps: UiDeps): Router {
  const r = new Router({ prefix: '/admin' });
  const { db, issuer, log } = deps;

  const refused = (ctx: Context, status: number, message: string) => {
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = deps.render('admin/signed-out', { title: 'Sign-in failed', failed: true, message, issuer });
  };

  r.get('/login', async (ctx) => {
    await ensureAdminUiClient(db, issuer);
    const { url, pending } = beginSignIn(issuer, safeNext(ctx.query.next));
    rememberSignIn(ctx, pending);
    ctx.status = 303;
    ctx.redirect(url);
  });

  r.get('/callback', async (ctx) => {
    const pending = takeSignIn(ctx);
    const q = ctx.query;
    if (typeof q.error === 'string') {
      return refused(ctx, 400, `The sign-in did not complete (${q.error}${typeof q.error_description === 'string' ? `: ${q.error_description}` : ''}).`);
    }
    // No pending sign-in: it expired, was already used, or started on another address than the issuer's.
    if (!pending || typeof q.state !== 'string' || q.state !== pending.state || typeof q.code !== 'string') {
      return refused(ctx, 400, `This sign-in expired or was started elsewhere. Open the admin UI at ${issuer}/admin and sign in again.`);
    }
    let sub: string;
    try {
      sub = await completeSignIn({ db, issuer, tokenBase: deps.localUrl, code: q.code, pending });
    } catch (err) {
      if (!(err instanceof SignInFailed)) throw err;
      log.warn({ event: 'admin.sign_in_failed', reason: err.message }, 'admin UI sign-in failed');
      return refused(ctx, 400, 'The sign-in could not be verified. Try again.');
    }
    const admin = await findAdmin(db, sub);
    if (!admin) {
      log.info({ event: 'admin.sign_in_refused', sub }, 'admin UI sign-in refused: not an admin');
      endSession(ctx);
      return forbidden(ctx, deps);
    }
    log.info({ event: 'admin.sign_in', sub, username: admin.username }, 'admin UI sign-in');
    startSession(ctx, sub);
    ctx.status = 303;
    ctx.redirect(pending.next);
  });

  r.get('/signed-out', (ctx) => {
    ctx.type = 'html';
    ctx.body = deps.render('admin/signed-out', { title: 'Signed out', issuer });
  });

  return r;
}

/**
 * Signing out ends the admin session here, then the provider's session (RP-initiated logout, which asks the
 * user to confirm), so the next visit asks for the password again.
 */
export function signOutRoute(r: UiRouter, deps: UiDeps): void {
  r.post('/logout', (ctx) => {
    endSession(ctx);
    ctx.status = 303;
    ctx.redirect(endSessionUrl(deps.issuer));
  });
}
