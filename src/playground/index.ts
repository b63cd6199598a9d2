import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';
import type { Logger } from 'pino';
import { z } from 'zod';
import { findClient } from '../admin/clients.ts';
import { catalog } from '../admin/ui/options.ts';
import type { DB } from '../db/index.ts';
import { csrfToken, requireCsrf } from '../web/csrf.ts';
import type { Render } from '../web/views.ts';
import { CLIENT, PlaygroundFlow, type Asked, type PlaygroundState } from './flow.ts';
import { localSessions, type SessionStore } from '../cluster/index.ts';
import { MAX_SESSIONS, SESSION_TTL_MS, Sessions, type OpenSession } from './session.ts';

export const PLAYGROUND_PREFIX = '/playground';

export interface PlaygroundDeps {
  db: DB;
  issuer: string;
  /** where this process reaches the IdP over HTTP */
  url: string;
  render: Render;
  log: Logger;
  /** the demo parties it drives (src/demo) */
  demo: { asIssuer: string; mcpResource: string };
  /** where the browsers' states live: this process (the default), or the cluster's primary */
  sessions?: SessionStore<PlaygroundState> | undefined;
}

/** RFC 6749 §3.3 scope-token characters. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const list = (v: unknown) => (Array.isArray(v) ? v : v === undefined ? [] : [v]);

const ExchangeForm = z.object({
  audience: z.string().trim().min(1, 'Choose a Resource AS (audience).').max(2048, 'The audience is longer than 2048 characters.'),
  resource: z.string().trim().max(2048, 'The resource is longer than 2048 characters.').optional(),
  scope: z.preprocess(list, z.array(z.string().trim().max(200, 'A scope is longer than 200 characters.')).max(20, 'Choose at most 20 scopes.')),
});

const CallForm = z.object({ tool: z.string().min(1, 'Choose a tool.').max(200) });

/**
 * `/playground`: the whole flow in the browser, one panel per step with the real requests and answers (see
 * flow.ts). Development only: main.ts mounts it when not in production and the demo parties run. Pages work
 * without JavaScript; `views/assets/playground.js` adds copy buttons and narrows the catalog to the chosen AS.
 */
export function playground(deps: PlaygroundDeps): { middleware: Middleware } {
  const flow = new PlaygroundFlow(deps);
  const sessions = new Sessions<PlaygroundState>(() => ({}), deps.sessions ?? localSessions({ max: MAX_SESSIONS, ttlMs: SESSION_TTL_MS }));
  // each request's session, opened before its route runs and saved after
  const opened = new WeakMap<Context, OpenSession<PlaygroundState>>();
  const session = (ctx: Context): PlaygroundState => opened.get(ctx)!.state;
  const forms = bodyParser({
    enableTypes: ['form'],
    formLimit: '16kb',
    onError(err) {
      const status = (err as { status?: number }).status === 413 ? 413 : 400;
      throw Object.assign(new Error(status === 413 ? 'The form is larger than 16 KB.' : 'The form could not be read.'), { status, expose: true });
    },
  });
  const csrf = requireCsrf((ctx) => errorPage(ctx, deps, 403, 'Form expired',
    'This form was missing its security token or the token had expired, so nothing was sent. Reload the playground and try again.'));

  const show = async (ctx: Context, s: PlaygroundState, extra: Record<string, unknown> = {}) => {
    ctx.type = 'html';
    ctx.body = deps.render('playground', { ...await pageData(deps, flow, s), csrf: csrfToken(ctx), ...extra });
  };
  const back = (ctx: Context, anchor: string) => {
    ctx.status = 303;
    ctx.redirect(`${PLAYGROUND_PREFIX}#${anchor}`);
  };

  const router = new Router({ prefix: PLAYGROUND_PREFIX });
  router.get('/', (ctx) => show(ctx, session(ctx)));

  router.post('/sign-in', forms, csrf, async (ctx) => {
    const s = session(ctx);
    const unready = await clientUnready(deps.db, flow.redirectUri);
    if (unready) {
      ctx.status = 409;
      return show(ctx, s, { formError: unready });
    }
    const to = flow.beginSignIn(s);
    ctx.status = 303;
    ctx.redirect(to);
  });

  router.get('/callback', async (ctx) => {
    const s = session(ctx);
    const ignored = await flow.completeSignIn(s, ctx.query);
    if (ignored) {
      ctx.status = 400;
      return show(ctx, s, { formError: ignored });
    }
    back(ctx, 'step-1');
  });

  router.post('/exchange', forms, csrf, async (ctx) => {
    const s = session(ctx);
    const form = ExchangeForm.safeParse(ctx.request.body ?? {});
    const scopes = form.success ? [...new Set(form.data.scope.flatMap((v) => v.split(' ')).filter(Boolean))] : [];
    const badScope = scopes.find((v) => !SCOPE_TOKEN.test(v));
    if (!form.success || badScope !== undefined) {
      ctx.status = 400;
      return show(ctx, s, { formError: form.success ? `"${badScope}" is not a valid scope (RFC 6749 §3.3).` : form.error.issues[0]?.message });
    }
    const asked: Asked = { audience: form.data.audience, resource: form.data.resource || undefined, scopes };
    await flow.exchange(s, asked);
    back(ctx, 'step-2');
  });

  router.post('/present', forms, csrf, async (ctx) => {
    await flow.present(session(ctx), deps.demo.asIssuer);
    back(ctx, 'step-3');
  });

  router.post('/call', forms, csrf, async (ctx) => {
    const s = session(ctx);
    const body = (ctx.request.body ?? {}) as Record<string, unknown>;
    const form = CallForm.safeParse(body);
    const tool = form.success ? s.tools?.tools.find((t) => t.name === form.data.tool) : undefined;
    if (!s.tools || !s.present?.accessToken) {
      ctx.status = 400;
      return show(ctx, s, { formError: 'There is no access token to call a tool with: complete step 3 first.' });
    }
    if (!tool) {
      ctx.status = 400;
      return show(ctx, s, { formError: form.success ? `The MCP server has no tool named "${form.data.tool}".` : form.error.issues[0]?.message });
    }
    // `arg[name]` fields, which the form parser (qs) nests under `arg`
    const given = (body.arg && typeof body.arg === 'object' ? body.arg : {}) as Record<string, unknown>;
    const args: Record<string, string> = {};
    for (const arg of tool.args) {
      const value = given[arg.name];
      if (typeof value === 'string' && value.length > 1000) {
        ctx.status = 400;
        return show(ctx, s, { formError: `The argument ${arg.name} is longer than 1000 characters.` });
      }
      if (typeof value === 'string' && value !== '') args[arg.name] = value;
    }
    await flow.callTool(s, tool, args);
    back(ctx, 'step-4');
  });

  router.post('/reset', forms, csrf, async (ctx) => {
    opened.set(ctx, await sessions.reset(ctx));
    ctx.status = 303;
    ctx.redirect(PLAYGROUND_PREFIX);
  });

  const routes = router.routes();
  const allowed = router.allowedMethods();
  const ours = (path: string) => path === PLAYGROUND_PREFIX || path.startsWith(`${PLAYGROUND_PREFIX}/`);
  const middleware: Middleware = async (ctx: Context, next: Next) => {
    if (!ours(ctx.path)) return next();
    // every page holds the session's tokens: never kept by a browser or a proxy
    ctx.set('Cache-Control', 'no-store');
    try {
      opened.set(ctx, await sessions.open(ctx));
      try {
        await routes(ctx as never, () => allowed(ctx as never, async () => undefined));
      } finally {
        await opened.get(ctx)!.save();
      }
      if (ctx.status === 404 && ctx.body === undefined) errorPage(ctx, deps, 404, 'Not found', 'There is no playground page at this address.');
    } catch (err) {
      const e = err as { status?: number; expose?: boolean; message?: string };
      if (e.expose && e.status && e.status < 500) return errorPage(ctx, deps, e.status, 'Request refused', e.message ?? 'The request was refused.');
      deps.log.error({ err, reqId: ctx.state.requestId }, 'playground request failed');
      errorPage(ctx, deps, 500, 'Something went wrong', 'An unexpected error occurred. It has been logged.');
    }
  };
  return { middleware };
}

/** Why the playground's client cannot sign anyone in, if it cannot (a database seeded before the playground existed). */
async function clientUnready(db: DB, redirectUri: string): Promise<string | undefined> {
  const client = await findClient(db, CLIENT.clientId);
  if (!client) return `The client ${CLIENT.clientId} does not exist: run npm run seed to add the demo's clients.`;
  if (client.disabled) return `The client ${CLIENT.clientId} is disabled: enable it in the admin UI (Clients) to use the playground.`;
  if (!client.redirect_uris?.includes(redirectUri)) {
    return `The client ${CLIENT.clientId} does not list the redirect URI ${redirectUri}: run npm run seed, or add it to the client in the admin UI.`;
  }
  return undefined;
}

function errorPage(ctx: Context, deps: PlaygroundDeps, status: number, title: string, description: string) {
  ctx.status = status;
  ctx.type = 'html';
  ctx.body = deps.render('error', { title, description });
}

/** Everything the page shows, from the session's state and the catalog (Resource ASes, MCP servers and their scopes). */
async function pageData(deps: PlaygroundDeps, flow: PlaygroundFlow, s: PlaygroundState) {
  const { audiences, resources } = await catalog(deps.db);
  const asked = s.exchange?.asked ?? { audience: deps.demo.asIssuer, resource: deps.demo.mcpResource, scopes: undefined };
  const chosen = resources.find((r) => r.value === asked.resource);
  const claims = s.signIn?.claims;
  const stoppedAt = [
    s.signIn?.error && 1,
    s.exchange?.error && 2,
    s.present?.error && 3,
    s.tools?.error && 4,
  ].find(Boolean);
  return {
    title: 'Playground',
    wide: true,
    playground: true,
    issuer: deps.issuer,
    clientId: CLIENT.clientId,
    redirectUri: flow.redirectUri,
    demoAs: deps.demo.asIssuer,
    audiences: audiences.map((a) => ({ ...a, selected: a.value === asked.audience })),
    resources: resources.map((r) => ({ ...r, selected: r.value === asked.resource })),
    scopes: resources.flatMap((r) => (r.scopes ? r.scopes.split(' ') : []).map((scope) => ({
      scope,
      resource: r.value,
      server: r.label.replace(` (${r.value})`, ''),
      // the asked scopes after an exchange; before one, every scope of the preselected MCP server
      checked: r.value === asked.resource && (asked.scopes ? asked.scopes.includes(scope) : chosen === r),
    }))),
    signIn: s.signIn,
    signedInAs: claims ? String(claims.preferred_username ?? claims.email ?? claims.sub) : undefined,
    exchange: s.exchange,
    present: s.present,
    tools: s.tools,
    canExchange: Boolean(s.signIn?.idToken),
    canPresent: Boolean(s.exchange?.idJag),
    stoppedAt,
  };
}
