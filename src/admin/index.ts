import type { Context, Next } from 'koa';
import type { Render } from '../web/views.ts';
import { adminApiMiddleware, ADMIN_API_PREFIX, type AdminApiDeps } from './api.ts';
import { ADMIN_UI_PREFIX, adminUiMiddleware } from './ui/index.ts';

/**
 * The admin side of idjag, as one factory for the composition (src/main.ts): the JSON API under /admin/api
 * (bearer tokens) and the web UI under /admin (admins signed in through this IdP), both over the same domain
 * modules (rules.ts, clients.ts, servers.ts, users.ts, groups.ts, audit-query.ts, simulate.ts,
 * signing-keys.ts, document.ts, changes.ts).
 */
export interface AdminDeps extends AdminApiDeps {
  /** the views; without them there is no web UI, only the API */
  render?: Render;
  /** where this node answers HTTP itself (the UI's sign-in calls its own token endpoint there); default the issuer */
  url?: string;
  /** when this node serves the demo parties: the demo agent's client id at the demo Resource AS */
  demoAsClientId?: string | undefined;
}

export { ADMIN_API_PREFIX, ADMIN_UI_PREFIX };

export function createAdmin(deps: AdminDeps) {
  const api = adminApiMiddleware(deps);
  const ui = deps.render
    ? adminUiMiddleware({ ...deps, render: deps.render, localUrl: deps.url ?? deps.issuer })
    : undefined;
  const middleware = (ctx: Context, next: Next) => api(ctx, ui ? () => ui(ctx, next) as Promise<void> : next);
  return { middleware, apiBase: ADMIN_API_PREFIX, uiBase: ui ? ADMIN_UI_PREFIX : undefined };
}
