import type { Context } from 'koa';
import { z } from 'zod';
import { formatAsReport, runAsConformance, type AsConformanceReport, type CaseResult } from '../../conformance/as-kit.ts';
import { idjagConformanceIdp } from '../../conformance/idjag-idp.ts';
import { Scope } from '../fields.ts';
import { fieldErrors, Form, issuesOf, type FieldErrors } from './forms.ts';
import { adminOf, page, type UiDeps, type UiRouter } from './page.ts';

/**
 * The conformance kit for Resource AS authors (src/conformance/as-kit.ts, the same code as `npm run conformance
 * -- as`) as a page: an admin names a Resource AS and a client registered at it, idjag signs the ID-JAGs with
 * its own issuer and active ID-JAG key, presents them at that token endpoint and shows the report.
 *
 * The requests go from this server to an address an admin typed (SSRF by design, for admins only): http and
 * https only, no redirects followed (the kit's own `redirect: 'manual'`), each request bounded by a timeout and
 * the whole run by a budget. Loopback is allowed on purpose: the demo AS runs on it. The client secret is used
 * for the run only: never logged, stored, put in a URL (the form is a POST) or rendered back, not even when the
 * AS under test echoes it.
 */

const FIELDS = ['token_endpoint', 'issuer', 'client_id', 'client_secret', 'resource', 'scope'] as const;

/** per request; the CLI's default is 15 s, but here a browser is waiting */
export const REQUEST_TIMEOUT_MS = 8_000;
/** the whole run (16 or 17 requests in sequence, 5 more with the DPoP cases): past it, the remaining requests fail at once as timeouts */
export const RUN_BUDGET_MS = 45_000;
const PROBE_TIMEOUT_MS = 2_000;
const DESCRIPTION_MAX = 240;
const REDACTED = '[redacted]';

const HttpUrl = z.string().max(2048, 'at most 2048 characters').refine((v) => {
  if (!URL.canParse(v)) return false;
  const url = new URL(v);
  return (url.protocol === 'http:' || url.protocol === 'https:') && !url.username && !url.password && !v.includes('#');
}, 'enter an absolute http:// or https:// URL, without a fragment or credentials in it');

/** What the form may ask the kit to do. */
export const ConformanceInput = z.object({
  token_endpoint: HttpUrl,
  issuer: HttpUrl,
  client_id: z.string().max(255, 'at most 255 characters').regex(/^[^\x00-\x1f\x7f]+$/, 'no control characters'),
  client_secret: z.string().max(1024, 'at most 1024 characters').regex(/^[^\x00-\x1f\x7f]+$/, 'no control characters'),
  resource: HttpUrl.optional(),
  scope: z.array(Scope).max(50, 'at most 50 scopes').optional(),
  /** also the DPoP cases: ID-JAGs bound to the client's key */
  dpop: z.boolean().optional(),
});

interface Defaults {
  token_endpoint: string;
  issuer: string;
  client_id: string;
  resource: string;
  scope: string;
}

/** `url` at the address this node answers HTTP on itself (the issuer can be a name only a proxy answers to). */
const reachable = (deps: UiDeps, url: string): string => {
  const u = new URL(url);
  return `${new URL(deps.localUrl).origin}${u.pathname}${u.search}`;
};

/**
 * The demo Resource AS's values when this node serves the demo: its MCP server's RFC 9728 metadata must name
 * `{issuer}/demo/as`. Asked of this node itself (a short, local GET); a positive answer is kept, since the demo
 * runs for the life of the process or not at all.
 */
function localDemo(deps: UiDeps): () => Promise<Defaults | undefined> {
  let found: Defaults | undefined;
  return async () => {
    if (found) return found;
    if (!deps.demoAsClientId) return undefined;
    const issuer = new URL(deps.issuer);
    const base = issuer.pathname.replace(/\/+$/, '');
    const asIssuer = `${issuer.origin}${base}/demo/as`;
    try {
      const res = await fetch(reachable(deps, `${issuer.origin}/.well-known/oauth-protected-resource${base}/demo/mcp`), {
        headers: { accept: 'application/json' }, redirect: 'manual', signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
      });
      if (res.status !== 200) return undefined;
      const doc = await res.json() as { resource?: unknown; authorization_servers?: unknown; scopes_supported?: unknown };
      if (typeof doc.resource !== 'string' || !Array.isArray(doc.authorization_servers) || !doc.authorization_servers.includes(asIssuer)) return undefined;
      const scopes = Array.isArray(doc.scopes_supported) ? doc.scopes_supported.filter((s): s is string => typeof s === 'string') : [];
      found = { token_endpoint: reachable(deps, `${asIssuer}/token`), issuer: asIssuer, client_id: deps.demoAsClientId, resource: doc.resource, scope: scopes.join(' ') };
      return found;
    } catch {
      return undefined;
    }
  };
}

/**
 * Every way the secret could come back in what the AS answered (as typed, form-encoded, inside a Basic header)
 * is replaced before anything is rendered. Secrets shorter than 4 characters are left alone: replacing every
 * "a" would make the report unreadable and hide nothing.
 */
export function redactor(clientId: string, secret: string): (text: string) => string {
  if (secret.length < 4) return (text) => text;
  const form = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  const needles = [...new Set([
    secret, form(secret), encodeURIComponent(secret),
    Buffer.from(`${form(clientId)}:${form(secret)}`).toString('base64'), Buffer.from(`${clientId}:${secret}`).toString('base64'),
  ])].sort((a, b) => b.length - a.length);
  return (text) => needles.reduce((t, n) => t.split(n).join(REDACTED), text);
}

function redactDeep<T>(value: T, redact: (text: string) => string): T {
  if (typeof value === 'string') return redact(value) as T;
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, redact)) as T;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [redact(k), redactDeep(v, redact)])) as T;
  return value;
}

const shorten = (text: string, max = DESCRIPTION_MAX) => (text.length <= max ? text : `${text.slice(0, max)}…`);

/** What the AS said in words: its error_description, the scope of a token it issued, or the start of a body that is not JSON. */
function description(c: CaseResult): string | undefined {
  const body = c.body;
  if (typeof body === 'string') return body ? shorten(body) : undefined;
  if (body && typeof body === 'object' && !Array.isArray(body)) {
    const { error_description: d, access_token: token, scope } = body as Record<string, unknown>;
    if (typeof d === 'string') return shorten(d);
    if (typeof token === 'string') return shorten(`access token issued${typeof scope === 'string' ? `, scope "${scope}"` : ', no scope stated'}`);
  }
  return undefined;
}

/** The same last line as the terminal report (formatAsReport). */
export function summaryLine(report: AsConformanceReport): string {
  const required = report.requiredFailed ? ` (${report.requiredFailed} required)` : '';
  const warnings = report.warnings ? `, ${report.warnings} warning${report.warnings === 1 ? '' : 's'}` : '';
  return `${report.cases.length} cases: ${report.passed} passed, ${report.failed} failed${required}${warnings}. ${report.ok ? 'CONFORMANT' : 'NOT CONFORMANT'}`;
}

function reportView(report: AsConformanceReport) {
  return {
    ...report,
    summary: summaryLine(report),
    text: formatAsReport(report),
    cases: report.cases.map((c) => ({
      id: c.id, title: c.title, expected: c.expected, required: c.required, section: c.section, pass: c.pass,
      status: c.status, error: c.error, actual: c.actual, description: description(c), warnings: c.warnings, note: c.note,
      first: c.first ? `${c.first.status ?? 'no answer'}` : undefined,
      request: JSON.stringify({
        header: c.request.header, claims: c.request.claims, params: c.request.params, client_auth: c.request.clientAuth,
        ...(c.request.dpop === undefined ? {} : { dpop_proof: c.request.dpop }),
      }, null, 2),
      body: JSON.stringify(c.body, null, 2),
    })),
  };
}

/** The form's fields as submitted, without the secret: it is never rendered back. */
function shownValues(f: Form): Record<string, string> {
  const { client_secret: _secret, ...values } = f.values();
  return values;
}

export function conformanceRoutes(r: UiRouter, deps: UiDeps): void {
  const demo = localDemo(deps);

  const show = (ctx: Context, defaults: Defaults | undefined, data: { values: Record<string, string>; errors?: FieldErrors; report?: AsConformanceReport }) => {
    page(ctx, deps, 'conformance', 'conformance', {
      title: 'Resource AS conformance',
      values: data.values,
      errors: data.errors?.fields ?? {},
      general: data.errors?.general ?? [],
      demo: defaults,
      idpIssuer: deps.issuer,
      requestTimeout: REQUEST_TIMEOUT_MS / 1000,
      runBudget: RUN_BUDGET_MS / 1000,
      report: data.report ? reportView(data.report) : undefined,
    });
  };

  r.get('/conformance', async (ctx) => {
    const defaults = await demo();
    show(ctx, defaults, { values: defaults ? { ...defaults } : {} });
  });

  r.post('/conformance', async (ctx) => {
    const f = Form.of(ctx);
    let input: z.output<typeof ConformanceInput>;
    try {
      const secret = f.raw('client_secret');
      if (secret === undefined) f.issues.push({ path: ['client_secret'], message: 'enter the client secret' });
      input = f.parse(ConformanceInput, {
        token_endpoint: f.required('token_endpoint', 'enter the token endpoint URL'),
        issuer: f.required('issuer', 'enter the issuer of the Resource AS'),
        client_id: f.required('client_id', 'enter the client id'),
        client_secret: secret ?? '',
        resource: f.text('resource'),
        scope: f.lines('scope').length ? f.lines('scope') : undefined,
        dpop: f.checked('dpop'),
      });
    } catch (err) {
      const issues = issuesOf(err);
      if (!issues) throw err;
      ctx.status = 400;
      return show(ctx, await demo(), { values: shownValues(f), errors: fieldErrors(issues, FIELDS) });
    }

    const budget = AbortSignal.timeout(RUN_BUDGET_MS);
    const bounded: typeof fetch = (url, init) => fetch(url, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, budget]) : budget });
    const report = await runAsConformance({
      tokenEndpoint: input.token_endpoint,
      issuer: input.issuer,
      clientId: input.client_id,
      clientSecret: input.client_secret,
      resource: input.resource,
      scope: input.scope?.join(' '),
      dpop: input.dpop === true,
      idp: await idjagConformanceIdp(deps.db, deps.issuer),
      fetch: bounded,
      timeoutMs: REQUEST_TIMEOUT_MS,
    });
    deps.log.info({
      event: 'admin.conformance_run', username: adminOf(ctx).username, token_endpoint: input.token_endpoint, issuer: input.issuer,
      client_id: input.client_id, passed: report.passed, failed: report.failed, ok: report.ok, ms: report.durationMs,
    }, 'admin UI ran the Resource AS conformance kit');
    show(ctx, await demo(), { values: shownValues(f), report: redactDeep(report, redactor(input.client_id, input.client_secret)) });
  });
}
