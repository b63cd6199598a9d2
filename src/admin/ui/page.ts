import type Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { Logger } from 'pino';
import type { DB } from '../../db/index.ts';
import { csrfToken } from '../../web/csrf.ts';
import type { Render } from '../../web/views.ts';
import type { Actor } from '../changes.ts';
import type { ImpactSettings } from '../impact.ts';
import type { UrlPolicy } from '../fields.ts';
import { fieldErrors, issuesOf, type FieldErrors, type Form } from './forms.ts';
import { flash, takeFlash, type AdminUser } from './session.ts';
import { endSessionUrl } from './sign-in.ts';

/** What every page module of the admin UI needs, and the few things they all do the same way. */
export interface UiDeps {
  db: DB;
  log: Logger;
  issuer: string;
  /** this IdP's tenant (the ID-JAG `tenant`), for the simulator's claims */
  tenant?: string | undefined;
  /** which URLs new Resource ASes and MCP servers may have: https only in production */
  urls?: UrlPolicy;
  /** where this node answers HTTP itself (its own token endpoint, for the sign-in's code exchange) */
  localUrl: string;
  render: Render;
  provider: () => Provider;
  reloadKeys: () => Promise<unknown>;
  /** when this node serves the demo parties: the demo agent's client id at the demo Resource AS (the conformance kit's defaults) */
  demoAsClientId?: string | undefined;
  /** how much recorded traffic a rule change's impact replays */
  impact?: ImpactSettings | undefined;
}

export type UiRouter = Router;

export const NAV = ['dashboard', 'rules', 'access', 'clients', 'servers', 'users', 'groups', 'audit', 'changes', 'simulate', 'conformance', 'keys'] as const;
export type Section = (typeof NAV)[number];

export const adminOf = (ctx: Context): AdminUser => ctx.state.adminUser!;

/** Changes made through the UI are recorded as `user:<username>`, with the request that made them. */
export function actorOf(ctx: Context): Actor {
  return { actor: `user:${adminOf(ctx).username}`, requestId: ctx.state.requestId };
}

export const param = (ctx: Context, name: string): string => (ctx as unknown as { params: Record<string, string> }).params[name]!;

/** Renders `views/admin/<view>.hbs` in the layout, with the navigation, the CSRF token and any flash message. */
export function page(ctx: Context, deps: UiDeps, view: string, section: Section | undefined, data: Record<string, unknown>): void {
  ctx.type = 'html';
  ctx.body = deps.render(`admin/${view}`, {
    wide: true,
    admin: adminOf(ctx),
    section,
    csrf: csrfToken(ctx),
    flash: takeFlash(ctx),
    ...data,
  });
}

/** Someone signed in who is not (or no longer) an admin: a page that shows nothing of the admin side. */
export function forbidden(ctx: Context, deps: UiDeps): void {
  ctx.status = 403;
  ctx.type = 'html';
  ctx.body = deps.render('admin/forbidden', { title: 'Not an administrator', signOut: endSessionUrl(deps.issuer) });
}

/** Post/redirect/get: after a change, the browser asks for a page (303), with a message for it. */
export function done(ctx: Context, location: string, message?: string): void {
  if (message) flash(ctx, 'ok', message);
  ctx.status = 303;
  ctx.redirect(location);
}

/** A button's action failed (a 404, a 409 because rules depend on it...): back to the page, saying why. */
export function failed(ctx: Context, location: string, err: unknown): void {
  const issues = issuesOf(err);
  if (!issues) throw err;
  flash(ctx, 'error', issues.map((i) => i.message).join('; '));
  ctx.status = 303;
  ctx.redirect(location);
}

/**
 * Runs a form's change; on a refusal the domain can explain (invalid input, conflict), re-renders the form with
 * each message next to its field and the values as submitted (400). Anything else propagates.
 */
export async function submit(ctx: Context, form: Form, shown: readonly string[], apply: () => Promise<void>,
  rerender: (errors: FieldErrors, values: Record<string, string>) => Promise<void>, field?: Parameters<typeof fieldErrors>[2]): Promise<void> {
  try {
    await apply();
  } catch (err) {
    const issues = issuesOf(err);
    if (!issues) throw err;
    ctx.status = (err as { status?: number }).status === 409 ? 409 : 400;
    await rerender(fieldErrors(issues, shown, field), form.values());
  }
}

/** A page's query without some keys (to build "next page" and filter links). */
export function queryWithout(ctx: Context, ...keys: string[]): string {
  const q = new URLSearchParams(ctx.querystring);
  for (const k of keys) q.delete(k);
  for (const [k, v] of [...q]) if (v === '') q.delete(k);
  return q.toString();
}

export const checkboxes = (options: readonly string[], selected: readonly string[], labels: Record<string, string> = {}) =>
  options.map((value) => ({ value, label: labels[value] ?? value, checked: selected.includes(value) }));
