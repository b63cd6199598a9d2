import { Readable } from 'node:stream';
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { DB } from '../db/index.ts';
import { AuditExport, AuditPage, exportAudit, getAuditEntry, searchAudit } from './audit-query.ts';
import { requireAdminToken } from './auth.ts';
import { AccessExport, AccessPage, accessPage, exportAccess } from './access.ts';
import { ChangeQuery, listChanges, type Actor, type Change } from './changes.ts';
import {
  ClientCreate, ClientFilter, ClientPatch, createClient, deleteClient, getClient, listClients, providerClientValidator,
  rotateClientSecret, setClientDisabled, updateClient,
} from './clients.ts';
import { applyDocument, ConfigDocument, exportDocument, substitute } from './document.ts';
import { parseInput } from './errors.ts';
import { classify, HttpError } from '../web/errors.ts';
import { DEVELOPMENT_URLS, QueryBoolean, type UrlPolicy } from './fields.ts';
import {
  addMember, createGroup, deleteGroup, getGroup, GroupDoc, GroupPatch, listGroups, MemberInput, MembersInput, removeMember, setMembers, updateGroup,
} from './groups.ts';
import { DEFAULT_IMPACT, previewImpact, type ImpactSettings, type ImpactSummary } from './impact.ts';
import { applyRuleChange, previewRuleChange, saveRuleChange, type RuleChange } from './rule-changes.ts';
import { getRule, listRules, RuleDoc, RuleFilter, RulePatch } from './rules.ts';
import {
  AudSubInput, createMcpServer, createResourceServer, deleteMcpServer, deleteResourceServer, getMcpServer, getResourceServer, listResourceServers,
  McpServerDoc, McpServerPatch, ResourceServerDoc, ResourceServerPatch, setAudienceSubject, updateMcpServer, updateResourceServer,
} from './servers.ts';
import { listKeys, RotateInput, rotateKeys } from './signing-keys.ts';
import { simulate, SimulationInput } from './simulate.ts';
import {
  createUser, deleteUser, getUser, listUsers, PasswordReset, resetPassword, setUserDisabled, updateUser, UserCreate, UserFilter, UserPatch,
} from './users.ts';

export const ADMIN_API_PREFIX = '/admin/api';

export interface AdminApiDeps {
  db: DB;
  log: Logger;
  issuer: string;
  /** this IdP's tenant (the ID-JAG `tenant`), for the simulator's claims */
  tenant?: string | undefined;
  /** which URLs new Resource ASes and MCP servers may have: https only in production */
  urls?: UrlPolicy;
  /** the current provider (rebuilt on key rotation) */
  provider: () => Provider;
  /** makes this node's provider load the signing keys again (after a rotation) */
  reloadKeys: () => Promise<unknown>;
  /** how much recorded traffic a change's impact replays (default: 7 days, 10,000 decisions) */
  impact?: ImpactSettings | undefined;
}

/** JSON bodies only, small: this API's inputs are forms and documents, never uploads. */
const BODY_LIMIT = '64kb';
/** An import is a whole configuration (thousands of rules still fit). */
const IMPORT_LIMIT = '2mb';

const jsonBody = (limit: string) => {
  const parse = bodyParser({
    enableTypes: ['json'], jsonLimit: limit, jsonStrict: true,
    onError(err) {
      const status = (err as { status?: number }).status;
      throw status === 413 ? new HttpError(413, `the body is larger than ${limit}`, { code: 'invalid_request' })
        : new HttpError(400, `the body is not valid JSON: ${err.message}`, { code: 'invalid_request' });
    },
  });
  return async (ctx: Context, next: Next) => {
    const hasBody = Number(ctx.get('content-length') || 0) > 0 || ctx.get('transfer-encoding') !== '';
    if (hasBody && !ctx.is('application/json')) {
      ctx.status = 415;
      ctx.body = { error: 'invalid_request', error_description: 'send the body as application/json' };
      return;
    }
    return parse(ctx, next);
  };
};

const body = jsonBody(BODY_LIMIT);
const importBody = jsonBody(IMPORT_LIMIT);

const query = (ctx: Context) => ({ ...ctx.query });
const input = (ctx: Context): unknown => (ctx.request as { body?: unknown }).body ?? {};
const param = (ctx: Context, name: string): string => (ctx as unknown as { params: Record<string, string> }).params[name]!;

function actor(ctx: Context): Actor {
  const admin = ctx.state.admin!;
  return { actor: admin.actor, requestId: ctx.state.requestId };
}

function created(ctx: Context, value: unknown): void {
  ctx.status = 201;
  ctx.body = value;
}

/** Errors become their JSON (src/web/errors.ts classifies them); a fault is logged and answered without detail. */
function errorBoundary(log: Logger) {
  return async (ctx: Context, next: Next) => {
    try {
      await next();
    } catch (err) {
      const c = classify(err);
      if (c.fault) log.error({ err, reqId: ctx.state.requestId }, 'admin API request failed');
      ctx.status = c.status;
      ctx.set(c.headers);
      ctx.body = { error: c.code, error_description: c.message, ...(c.issues.length ? { issues: c.issues } : {}) };
    }
  };
}

/** `?impact=`: preview (nothing saved), true (saved with its impact), false or absent (saved, no replay). */
const ImpactParam = z.enum(['preview', 'true', 'false', '1', '0']).transform((v) => (v === 'preview' ? 'preview' : v === 'true' || v === '1' ? 'save' : 'none'));

function impactMode(ctx: Context): 'preview' | 'save' | 'none' {
  return parseInput(z.object({ impact: ImpactParam.optional() }), query(ctx)).impact ?? 'none';
}

function routes(deps: AdminApiDeps): Router {
  const { db } = deps;
  const impactSettings = deps.impact ?? DEFAULT_IMPACT;
  const urls = deps.urls ?? DEVELOPMENT_URLS;
  const validateClient = providerClientValidator(deps.provider);
  const r = new Router({ prefix: ADMIN_API_PREFIX });

  r.get('/whoami', (ctx) => {
    const admin = ctx.state.admin!;
    ctx.body = { actor: admin.actor, client_id: admin.clientId, scope: admin.scopes.join(' '), expires_at: admin.expiresAt === undefined ? null : new Date(admin.expiresAt * 1000).toISOString() };
  });

  // Policy rules. `?impact=preview`: nothing is saved, the answer is what the change would do to the recorded
  // decisions of the last days; `?impact=true`: saved, with that impact returned and kept in the change log.
  const ruleChange = async (ctx: Context, change: RuleChange, status = 200) => {
    const mode = impactMode(ctx);
    if (mode === 'none') {
      const rule = await applyRuleChange(db, change, actor(ctx));
      if (rule) {
        ctx.status = status;
        ctx.body = rule;
      } else ctx.status = 204;
      return;
    }
    const { rule, impact } = await (mode === 'preview' ? previewRuleChange : saveRuleChange)(db, impactSettings, change, actor(ctx));
    if (mode === 'preview') ctx.body = { dry_run: true, ...(rule ? { rule } : {}), impact };
    else {
      ctx.status = status;
      // a delete has no rule to answer with: it names the rule deleted
      ctx.body = rule ? { ...rule, impact } : { deleted: 'id' in change ? change.id : undefined, impact };
    }
  };
  r.get('/rules', async (ctx) => { ctx.body = await listRules(db, parseInput(RuleFilter, query(ctx))); });
  r.post('/rules', body, async (ctx) => ruleChange(ctx, { action: 'create', doc: parseInput(RuleDoc, input(ctx)) }, 201));
  r.get('/rules/:id', async (ctx) => { ctx.body = await getRule(db, param(ctx, 'id')); });
  r.patch('/rules/:id', body, async (ctx) => ruleChange(ctx, { action: 'update', id: param(ctx, 'id'), patch: parseInput(RulePatch, input(ctx)) }));
  r.post('/rules/:id/enable', body, async (ctx) => ruleChange(ctx, { action: 'enable', id: param(ctx, 'id') }));
  r.post('/rules/:id/disable', body, async (ctx) => ruleChange(ctx, { action: 'disable', id: param(ctx, 'id') }));
  r.delete('/rules/:id', async (ctx) => ruleChange(ctx, { action: 'delete', id: param(ctx, 'id') }));

  // Effective access: who can reach what, decided by the policy engine; the export streams.
  r.get('/access', async (ctx) => { ctx.body = await accessPage(db, parseInput(AccessPage, query(ctx))); });
  r.get('/access/export', async (ctx) => {
    const { format, ...filter } = parseInput(AccessExport, query(ctx));
    const chunks = await exportAccess(db, filter, format);
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    ctx.type = format === 'csv' ? 'text/csv; charset=utf-8' : 'application/jsonl; charset=utf-8';
    ctx.set('Content-Disposition', `attachment; filename="idjag-access-${stamp}.${format}"`);
    ctx.body = Readable.from(chunks);
  });

  // Clients
  r.get('/clients', async (ctx) => { ctx.body = { items: await listClients(db, parseInput(ClientFilter, query(ctx))) }; });
  r.post('/clients', body, async (ctx) => created(ctx, await createClient(db, parseInput(ClientCreate, input(ctx)), actor(ctx), validateClient)));
  r.get('/clients/:id', async (ctx) => { ctx.body = await getClient(db, param(ctx, 'id')); });
  r.patch('/clients/:id', body, async (ctx) => { ctx.body = await updateClient(db, param(ctx, 'id'), parseInput(ClientPatch, input(ctx)), actor(ctx), validateClient); });
  r.post('/clients/:id/rotate-secret', body, async (ctx) => { ctx.body = await rotateClientSecret(db, param(ctx, 'id'), actor(ctx)); });
  r.post('/clients/:id/enable', body, async (ctx) => { ctx.body = await setClientDisabled(db, param(ctx, 'id'), false, actor(ctx)); });
  r.post('/clients/:id/disable', body, async (ctx) => { ctx.body = await setClientDisabled(db, param(ctx, 'id'), true, actor(ctx)); });
  r.delete('/clients/:id', async (ctx) => { await deleteClient(db, param(ctx, 'id'), actor(ctx)); ctx.status = 204; });

  // Resource authorization servers and their MCP servers
  r.get('/resource-servers', async (ctx) => { ctx.body = { items: await listResourceServers(db) }; });
  r.post('/resource-servers', body, async (ctx) => created(ctx, await createResourceServer(db, parseInput(ResourceServerDoc, input(ctx)), actor(ctx), urls)));
  r.get('/resource-servers/:id', async (ctx) => { ctx.body = await getResourceServer(db, param(ctx, 'id')); });
  r.patch('/resource-servers/:id', body, async (ctx) => { ctx.body = await updateResourceServer(db, param(ctx, 'id'), parseInput(ResourceServerPatch, input(ctx)), actor(ctx)); });
  r.delete('/resource-servers/:id', async (ctx) => { await deleteResourceServer(db, param(ctx, 'id'), actor(ctx)); ctx.status = 204; });
  r.put('/resource-servers/:id/aud-subs/:username', body, async (ctx) => {
    ctx.body = await setAudienceSubject(db, param(ctx, 'id'), param(ctx, 'username'), parseInput(AudSubInput, input(ctx)).aud_sub, actor(ctx));
  });
  r.delete('/resource-servers/:id/aud-subs/:username', async (ctx) => { ctx.body = await setAudienceSubject(db, param(ctx, 'id'), param(ctx, 'username'), null, actor(ctx)); });
  r.post('/resource-servers/:id/mcp-servers', body, async (ctx) => created(ctx, await createMcpServer(db, param(ctx, 'id'), parseInput(McpServerDoc, input(ctx)), actor(ctx), urls)));
  r.get('/mcp-servers/:id', async (ctx) => { ctx.body = await getMcpServer(db, param(ctx, 'id')); });
  r.patch('/mcp-servers/:id', body, async (ctx) => { ctx.body = await updateMcpServer(db, param(ctx, 'id'), parseInput(McpServerPatch, input(ctx)), actor(ctx)); });
  r.delete('/mcp-servers/:id', async (ctx) => { await deleteMcpServer(db, param(ctx, 'id'), actor(ctx)); ctx.status = 204; });

  // Users and groups
  r.get('/users', async (ctx) => { ctx.body = await listUsers(db, parseInput(UserFilter, query(ctx))); });
  r.post('/users', body, async (ctx) => created(ctx, await createUser(db, parseInput(UserCreate, input(ctx)), actor(ctx))));
  r.get('/users/:username', async (ctx) => { ctx.body = await getUser(db, param(ctx, 'username')); });
  r.patch('/users/:username', body, async (ctx) => { ctx.body = await updateUser(db, param(ctx, 'username'), parseInput(UserPatch, input(ctx)), actor(ctx)); });
  r.post('/users/:username/enable', body, async (ctx) => { ctx.body = await setUserDisabled(db, param(ctx, 'username'), false, actor(ctx)); });
  r.post('/users/:username/disable', body, async (ctx) => { ctx.body = await setUserDisabled(db, param(ctx, 'username'), true, actor(ctx)); });
  r.post('/users/:username/reset-password', body, async (ctx) => {
    ctx.body = await resetPassword(db, param(ctx, 'username'), parseInput(PasswordReset, input(ctx)).password, actor(ctx));
  });
  r.delete('/users/:username', async (ctx) => { await deleteUser(db, param(ctx, 'username'), actor(ctx)); ctx.status = 204; });

  r.get('/groups', async (ctx) => { ctx.body = { items: await listGroups(db) }; });
  r.post('/groups', body, async (ctx) => created(ctx, await createGroup(db, parseInput(GroupDoc, input(ctx)), actor(ctx))));
  r.get('/groups/:name', async (ctx) => { ctx.body = await getGroup(db, param(ctx, 'name')); });
  r.patch('/groups/:name', body, async (ctx) => { ctx.body = await updateGroup(db, param(ctx, 'name'), parseInput(GroupPatch, input(ctx)), actor(ctx)); });
  r.delete('/groups/:name', async (ctx) => { await deleteGroup(db, param(ctx, 'name'), actor(ctx)); ctx.status = 204; });
  r.put('/groups/:name/members', body, async (ctx) => { ctx.body = await setMembers(db, param(ctx, 'name'), parseInput(MembersInput, input(ctx)).usernames, actor(ctx)); });
  r.post('/groups/:name/members', body, async (ctx) => { ctx.body = await addMember(db, param(ctx, 'name'), parseInput(MemberInput, input(ctx)).username, actor(ctx)); });
  r.delete('/groups/:name/members/:username', async (ctx) => { ctx.body = await removeMember(db, param(ctx, 'name'), param(ctx, 'username'), actor(ctx)); });

  // The audit log and the change log
  r.get('/audit', async (ctx) => { ctx.body = await searchAudit(db, parseInput(AuditPage, query(ctx))); });
  r.get('/audit/export', async (ctx) => {
    const { format, ...filter } = parseInput(AuditExport, query(ctx));
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    ctx.type = format === 'csv' ? 'text/csv; charset=utf-8' : 'application/jsonl; charset=utf-8';
    ctx.set('Content-Disposition', `attachment; filename="idjag-audit-${stamp}.${format}"`);
    ctx.body = Readable.from(exportAudit(db, filter, format));
  });
  r.get('/audit/:id', async (ctx) => { ctx.body = await getAuditEntry(db, param(ctx, 'id')); });
  r.get('/changes', async (ctx) => { ctx.body = await listChanges(db, parseInput(ChangeQuery, query(ctx))); });

  // What if
  r.post('/simulate', body, async (ctx) => { ctx.body = await simulate(db, parseInput(SimulationInput, input(ctx)), { issuer: deps.issuer, tenant: deps.tenant }); });

  // Signing keys
  r.get('/keys', async (ctx) => { ctx.body = await listKeys(db); });
  r.post('/keys/rotate', body, async (ctx) => { ctx.body = await rotateKeys(db, parseInput(RotateInput, input(ctx)).purposes, actor(ctx), deps.reloadKeys); });

  // Policy as code
  r.get('/export', async (ctx) => {
    ctx.set('Content-Disposition', 'attachment; filename="idjag-config.json"');
    ctx.body = await exportDocument(db);
  });
  r.post('/import', importBody, async (ctx) => {
    const q = parseInput(z.strictObject({ dry_run: QueryBoolean.optional(), impact: ImpactParam.optional() }), query(ctx));
    const mode = q.impact ?? 'none';
    const dryRun = (q.dry_run ?? false) || mode === 'preview';
    const doc = parseInput(ConfigDocument, substitute(input(ctx), { ISSUER: deps.issuer }));
    const options = { ...actor(ctx), validateClient, urls };
    let changes: Change[];
    let impact: ImpactSummary | undefined;
    if (mode === 'none') changes = await applyDocument(db, doc, { ...options, dryRun });
    else {
      // an import can change anything the policy reads (rules, groups, clients, MCP servers): every client's decisions are replayed
      const preview = await previewImpact(db, impactSettings, null, (o) => applyDocument(db, doc, { ...options, ...o }));
      impact = preview.impact;
      changes = dryRun ? preview.result : await applyDocument(db, doc, { ...options, impact });
    }
    const summary: Record<string, number> = {};
    for (const c of changes) summary[c.action] = (summary[c.action] ?? 0) + 1;
    ctx.body = { dry_run: dryRun, applied: !dryRun, summary, changes, ...(impact ? { impact } : {}) };
  });

  return r;
}

/**
 * The admin JSON API under /admin/api: bearer authentication first (nothing is parsed or routed before it),
 * then JSON bodies on the routes that take one, then the routes. Requests outside the prefix pass through
 * untouched, so no body parser ever runs in front of the provider.
 */
export function adminApiMiddleware(deps: AdminApiDeps) {
  const router = routes(deps);
  const stack = [
    errorBoundary(deps.log),
    async (ctx: Context, next: Next) => {
      ctx.set('Cache-Control', 'no-store');
      await next();
    },
    requireAdminToken(deps.provider),
    router.routes() as unknown as (ctx: Context, next: Next) => Promise<unknown>,
    router.allowedMethods() as unknown as (ctx: Context, next: Next) => Promise<unknown>,
    async (ctx: Context) => {
      ctx.status = 404;
      ctx.body = { error: 'not_found', error_description: `no admin API endpoint ${ctx.method} ${ctx.path}` };
    },
  ];
  const run = (ctx: Context, i: number): Promise<unknown> => Promise.resolve(stack[i]?.(ctx, () => run(ctx, i + 1) as Promise<void>));
  return async (ctx: Context, next: Next) => {
    if (ctx.path !== ADMIN_API_PREFIX && !ctx.path.startsWith(`${ADMIN_API_PREFIX}/`)) return next();
    await run(ctx, 0);
    // allowedMethods turns the fallback's 404 into a 405 (with Allow) when the path exists with other methods
    if (ctx.status === 405) {
      ctx.body = { error: 'method_not_allowed', error_description: `${ctx.method} is not allowed on ${ctx.path}; use ${ctx.response.get('Allow')}` };
    }
  };
}
