import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import { csrfToken, requireCsrf } from '../../web/csrf.ts';
import { ADMIN_API_PREFIX } from '../api.ts';
import { classify, HttpError } from '../../web/errors.ts';
import { accessRoutes } from './access.ts';
import { auditRoutes } from './audit.ts';
import { clientRoutes } from './clients.ts';
import { conformanceRoutes } from './conformance.ts';
import { dashboardRoutes } from './dashboard.ts';
import { directoryRoutes } from './directory.ts';
import { keyRoutes } from './keys.ts';
import { forbidden, type UiDeps } from './page.ts';
import { ruleRoutes } from './rules.ts';
import { serverRoutes } from './servers.ts';
import { currentSession, endSession } from './session.ts';
import { signInRoutes, signOutRoute } from './sign-in-routes.ts';
import { simulatorRoutes } from './simulate.ts';

export type { UiDeps } from './page.ts';

export const ADMIN_UI_PREFIX = '/admin';

type Middleware = (ctx: Context, next: Next) => unknown;

const chain = (...stack: Middleware[]) => (ctx: Context, next: Next): Promise<unknown> => {
  const run = (i: number): Promise<unknown> => Promise.resolve(i < stack.length ? stack[i]!(ctx, () => run(i + 1) as Promise<void>) : next());
  return run(0);
};

const isUiPath = (path: string) => (path === ADMIN_UI_PREFIX || path.startsWith(`${ADMIN_UI_PREFIX}/`))
  && path !== ADMIN_API_PREFIX && !path.startsWith(`${ADMIN_API_PREFIX}/`);

/** Errors become pages: what the admin can fix says so (400, 404, 409); a fault is logged and a plain 500. */
function errorPages(deps: UiDeps): Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      const c = classify(err);
      if (c.fault) deps.log.error({ err, reqId: ctx.state.requestId }, 'admin UI request failed');
      ctx.status = c.status;
      ctx.type = 'html';
      ctx.body = deps.render('admin/error', {
        title: c.status === 404 ? 'Not found' : c.fault ? 'Something went wrong' : 'Request refused',
        wide: true,
        admin: ctx.state.adminUser,
        csrf: ctx.state.adminUser ? csrfToken(ctx) : undefined,
        message: c.fault ? 'An unexpected error occurred. It has been logged.' : c.message,
      });
    }
  };
}

/**
 * Everything past sign-in needs a current admin: signed in, enabled, in the admins group, checked on every
 * request. Nobody signed in is sent to sign in (nothing runs); someone who is not an admin gets a 403 page
 * that shows nothing of the admin side.
 */
function requireAdmin(deps: UiDeps): Middleware {
  return async (ctx, next) => {
    const session = await currentSession(ctx, deps.db);
    if (session.kind === 'admin') {
      ctx.state.adminUser = session.user;
      return next();
    }
    if (session.kind === 'forbidden') {
      endSession(ctx);
      return forbidden(ctx, deps);
    }
    ctx.status = 303;
    ctx.redirect(ctx.method === 'GET' ? `${ADMIN_UI_PREFIX}/login?next=${encodeURIComponent(ctx.url)}` : `${ADMIN_UI_PREFIX}/login`);
  };
}

/** Form posts only, small; parsed here, on /admin routes, never in front of the provider. */
const forms = bodyParser({
  enableTypes: ['form'],
  formLimit: '64kb',
  onError(err) {
    const status = (err as { status?: number }).status === 413 ? 413 : 400;
    throw new HttpError(status, status === 413 ? 'The form is larger than 64 KB.' : 'The form could not be read.');
  },
});

function csrf(deps: UiDeps): Middleware {
  const check = requireCsrf((ctx) => {
    ctx.status = 403;
    ctx.type = 'html';
    ctx.body = deps.render('admin/error', {
      title: 'Form expired', wide: true, admin: ctx.state.adminUser, csrf: csrfToken(ctx),
      message: 'This form was missing its security token or the token had expired, so nothing was changed. Go back, reload the page and try again.',
    });
  });
  return (ctx, next) => (['GET', 'HEAD'].includes(ctx.method) ? next() : check(ctx, next));
}

function pages(deps: UiDeps): Router {
  const r = new Router({ prefix: ADMIN_UI_PREFIX });
  for (const add of [dashboardRoutes, ruleRoutes, accessRoutes, clientRoutes, serverRoutes, directoryRoutes, auditRoutes, simulatorRoutes, conformanceRoutes, keyRoutes, signOutRoute]) add(r, deps);
  return r;
}

/**
 * The admin web UI under /admin (the JSON API under /admin/api is another middleware): server-rendered pages
 * over the same domain modules as the API, for members of the admins group signed in through this IdP.
 */
export function adminUiMiddleware(deps: UiDeps) {
  const open = signInRoutes(deps);
  const router = pages(deps);
  const notFound: Middleware = () => { throw new HttpError(404, 'There is no admin page at this address.'); };
  const stack = chain(
    errorPages(deps),
    async (ctx, next) => {
      // pages show secrets once and personal data always: never stored by a browser or a proxy
      ctx.set('Cache-Control', 'no-store');
      await next();
    },
    open.routes() as unknown as Middleware,
    requireAdmin(deps),
    forms,
    csrf(deps),
    router.routes() as unknown as Middleware,
    notFound,
  );
  return (ctx: Context, next: Next) => (isUiPath(ctx.path) ? stack(ctx, async () => {}) : next());
}
