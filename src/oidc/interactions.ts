import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import { errors, type InteractionResults } from 'oidc-provider';
import type { Logger } from 'pino';
import { z } from 'zod';
import { recordLogin, type LoginRecord } from '../audit/logins.ts';
import { findClientRow } from '../db/clients.ts';
import type { DB } from '../db/index.ts';
import type { LoginEvent } from '../db/schema.ts';
import { csrfToken, requireCsrf } from '../web/csrf.ts';
import { badRequest, classify } from '../web/errors.ts';
import type { Render } from '../web/views.ts';
import { accountKey, authenticate } from './accounts.ts';

/** Sign-in brute-force throttling, as the login form uses it (src/throttle implements it over the database). */
export interface SignInThrottle {
  /** counts an attempt before its password is checked: whether it may be checked at all */
  attempt(username: string, ip: string): Promise<{ allowed: true; attempt: number } | { allowed: false; by: 'account' | 'ip'; retryAfter: number }>;
  /** after a failed attempt: the block it set, in seconds, if any */
  failed(username: string, attempt: number): Promise<number | undefined>;
  succeeded(username: string, ip: string): Promise<void>;
}

export interface InteractionDeps {
  db: DB;
  render: Render;
  log: Logger;
  /** the current provider (it is rebuilt on key rotation) */
  provider: () => Provider;
  /** sign-in brute-force throttling (src/throttle/index.ts) */
  throttle: SignInThrottle;
  /** measurements (src/metrics): each sign-in as its login_events row is written */
  observe?: SignInObserver | undefined;
}

export interface SignInObserver {
  /** a sign-in attempt's row was written to login_events */
  observeSignIn(event: LoginEvent, reason: string | undefined): void;
  /** a sign-in attempt's row could not be written (the attempt then fails) */
  observeAuditFailure(): void;
}

const LoginForm = z.object({
  username: z.string().trim().min(1, 'Enter your username.').max(200),
  password: z.string().min(1, 'Enter your password.').max(1024),
});

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

/**
 * The login and consent pages the provider sends the browser to. Forms are parsed here and only here: the
 * provider's own routes get no body parser in front of them.
 */
export function interactionRoutes(deps: InteractionDeps): Router {
  const { render, db, log, throttle, observe } = deps;
  // every sign-in attempt is counted where its row is written, so the metrics agree with login_events
  const recordAttempt = async (r: LoginRecord) => {
    try {
      await recordLogin(db, r);
    } catch (err) {
      observe?.observeAuditFailure();
      throw err;
    }
    observe?.observeSignIn(r.event, r.reason);
  };
  const router = new Router({ prefix: '/interaction' });
  const forms = bodyParser({ enableTypes: ['form'], formLimit: '16kb' });
  const csrf = requireCsrf((ctx) => {
    ctx.status = 403;
    ctx.type = 'html';
    ctx.body = render('error', {
      title: 'Form expired',
      error: 'invalid_request',
      description: 'This form was missing its security token or it had expired. Go back, reload the page and try again.',
    });
  });

  router.use(async (ctx: Context, next: Next) => {
    try {
      await next();
    } catch (err) {
      const sessionLost = (err as { name?: unknown }).name === 'SessionNotFound';
      const c = classify(err);
      if (c.fault && !sessionLost) log.error({ err }, 'interaction failed');
      ctx.status = sessionLost ? 400 : c.status;
      ctx.type = 'html';
      ctx.body = render('error', {
        title: 'Sign-in could not continue',
        error: sessionLost ? 'session_not_found' : c.code,
        description: sessionLost
          ? 'Your sign-in request expired or its cookie is missing or invalid. Return to the application and start again.'
          : c.fault ? 'An unexpected error occurred. It has been logged.' : c.message,
      });
    }
  });

  const details = async (ctx: Context): Promise<Details> => {
    const d = await deps.provider().interactionDetails(ctx.req, ctx.res);
    if (d.uid !== ctx.params.uid) throw badRequest('This sign-in page belongs to another request. Return to the application and start again.');
    return d;
  };

  const finish = async (ctx: Context, result: InteractionResults, merge: boolean) => {
    const to = await deps.provider().interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: merge });
    ctx.status = 303;
    ctx.redirect(to);
  };

  const clientView = async (clientId: string) => {
    const client = await deps.provider().Client.find(clientId);
    const row = await findClientRow(db, clientId);
    return { name: client?.clientName ?? clientId, firstParty: Boolean(row?.first_party) };
  };

  const showLogin = (ctx: Context, d: Details, client: { name: string }, extra: Record<string, unknown> = {}) => {
    ctx.type = 'html';
    ctx.body = render('login', {
      title: 'Sign in',
      uid: d.uid,
      csrf: csrfToken(ctx),
      clientName: client.name,
      username: d.params.login_hint,
      ...extra,
    });
  };

  router.get('/:uid', async (ctx) => {
    const d = await details(ctx);
    const client = await clientView(String(d.params.client_id));
    if (d.prompt.name === 'login') return showLogin(ctx, d, client);
    if (d.prompt.name === 'consent') {
      // First-party clients are the enterprise's own: the admin consented for its users.
      if (client.firstParty) return finish(ctx, { consent: { grantId: await grantConsent(deps.provider(), d) } }, true);
      const pd = d.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
      ctx.type = 'html';
      ctx.body = render('consent', {
        title: 'Allow access',
        uid: d.uid,
        csrf: csrfToken(ctx),
        clientName: client.name,
        scopes: (pd.missingOIDCScope ?? []).filter((s) => s !== 'openid'),
        claims: pd.missingOIDCClaims ?? [],
        resources: Object.entries(pd.missingResourceScopes ?? {}).map(([resource, scopes]) => ({ resource, scopes })),
        offline: (pd.missingOIDCScope ?? []).includes('offline_access'),
      });
      return;
    }
    throw badRequest(`This IdP cannot complete the "${d.prompt.name}" step.`);
  });

  router.post('/:uid/login', forms, csrf, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'login') throw badRequest('This request is past the sign-in step. Return to the application and start again.');
    const client = await clientView(String(d.params.client_id));
    const form = LoginForm.safeParse(ctx.request.body ?? {});
    if (!form.success) {
      ctx.status = 400;
      return showLogin(ctx, d, client, { error: form.error.issues[0]?.message, username: (ctx.request.body as Record<string, unknown>)?.username });
    }
    const { username, password } = form.data;
    const event: Omit<LoginRecord, 'event'> = {
      requestId: ctx.state.requestId ?? '', username: accountKey(username), clientId: String(d.params.client_id),
      ip: ctx.ip, userAgent: ctx.get('user-agent') || undefined,
    };
    // Throttled before the password is looked at, and answered the same whether or not the account exists.
    const verdict = await throttle.attempt(username, ctx.ip);
    if (!verdict.allowed) {
      log.warn({ event: 'login.throttled', by: verdict.by, username, ip: ctx.ip, retryAfter: verdict.retryAfter }, 'login throttled');
      await recordAttempt({ ...event, event: 'throttled', reason: verdict.by, retryAfter: verdict.retryAfter });
      ctx.status = 429;
      ctx.set('Retry-After', String(verdict.retryAfter));
      return showLogin(ctx, d, client, { username, error: tooManyAttempts(verdict.retryAfter) });
    }
    const result = await authenticate(db, username, password);
    if (!result.ok) {
      const blocked = await throttle.failed(username, verdict.attempt);
      log.info({ event: 'login.failed', reason: result.reason, username, ip: ctx.ip, attempt: verdict.attempt, blocked }, 'login failed');
      await recordAttempt({ ...event, event: 'failed', reason: result.reason, failures: verdict.attempt || undefined, retryAfter: blocked });
      ctx.status = 401;
      return showLogin(ctx, d, client, {
        username,
        error: result.reason === 'disabled' ? 'This account is disabled. Contact your administrator.' : 'Wrong username or password.',
      });
    }
    await throttle.succeeded(username, ctx.ip);
    log.info({ event: 'login.succeeded', sub: result.user.sub, username: result.user.username, ip: ctx.ip }, 'login succeeded');
    await recordAttempt({ ...event, event: 'succeeded', sub: result.user.sub });
    return finish(ctx, { login: { accountId: result.user.sub, amr: ['pwd'], remember: true } }, false);
  });

  router.post('/:uid/confirm', forms, csrf, async (ctx) => {
    const d = await details(ctx);
    if (d.prompt.name !== 'consent') throw badRequest('This request is not waiting for consent. Return to the application and start again.');
    return finish(ctx, { consent: { grantId: await grantConsent(deps.provider(), d) } }, true);
  });

  router.post('/:uid/abort', forms, csrf, async (ctx) => {
    await details(ctx);
    return finish(ctx, { error: 'access_denied', error_description: 'The user denied the request.' }, false);
  });

  return router;
}

/** The login page's message for a throttled attempt (the same for every account, existing or not). */
export function tooManyAttempts(retryAfter: number): string {
  const wait = retryAfter < 120 ? `${retryAfter} ${retryAfter === 1 ? 'second' : 'seconds'}` : `${Math.ceil(retryAfter / 60)} minutes`;
  return `Too many failed sign-in attempts. Try again in ${wait}.`;
}

/** Grants what the consent prompt found missing, on the existing grant when there is one. */
async function grantConsent(provider: Provider, d: Details): Promise<string> {
  const accountId = d.session?.accountId;
  if (!accountId) throw new errors.SessionNotFound('no session');
  const grant = (d.grantId ? await provider.Grant.find(d.grantId) : undefined)
    ?? new provider.Grant({ accountId, clientId: String(d.params.client_id) });
  const pd = d.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
  if (pd.missingOIDCScope) grant.addOIDCScope(pd.missingOIDCScope.join(' '));
  if (pd.missingOIDCClaims) grant.addOIDCClaims(pd.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(pd.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
  return grant.save();
}
